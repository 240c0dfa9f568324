"""A short prepared check for a lent GPU: a few hundred bf16 fine-tuning steps + encoder fp16/bf16.

    python bench/gpu_finetune_check.py [--steps 300]

Prints the card, samples/s of branch fine-tuning (bf16 autocast, AdamW, batch 32 x 128 tokens)
and encoder sentences/s at batch 1 and 64 on CUDA. Needs the model folder (`ecrec prepare`).
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    from transformers import AutoModel

    from ecrec.text.classifier import BranchClassifier
    from ecrec.text.encoder import EncoderConfig, TextEncoder, resolve_model_dir

    dev = torch.device("cuda")
    print("device:", torch.cuda.get_device_name(0))
    base = AutoModel.from_pretrained(str(resolve_model_dir(EncoderConfig())), dtype=torch.float32,
                                     add_pooling_layer=False)
    for k in (3, 12):
        model = BranchClassifier(base, 3, k).to(dev).train()
        opt = torch.optim.AdamW(model.branch.parameters(), lr=1e-4)
        ids = torch.randint(5, 250000, (32, 128), device=dev)
        mask = torch.ones_like(ids)
        y = torch.randint(0, 3, (32,), device=dev)
        for step in range(args.steps + 20):
            if step == 20:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(ids, mask), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        print(f"fine-tune branch_layers={k}: {args.steps * 32 / (time.perf_counter() - t0):.0f} samples/s (bf16)")
    enc = TextEncoder(EncoderConfig(device="cuda", batch_size=64))
    texts = ["这款手机拍照效果很好，但电池续航不太理想", "Noise cancelling is superb on flights."] * 32
    for bs in (1, 64):
        enc.encode(texts[:bs])
        torch.cuda.synchronize()
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 3:
            enc.encode(texts[:bs])
            n += bs
        print(f"encoder {enc.dtype} batch {bs}: {n / (time.perf_counter() - t0):.0f} sentences/s")


if __name__ == "__main__":
    main()
