"""Training throughput on this machine, side by side in one run (writes the "train" section).

    .venv/bin/python bench/train_throughput.py     # ~6 min

Same model (e5-small, 3-layer branch), same data (MARC zh+en, 1,536 examples, max_length 128,
32 per step in total):
- plain PyTorch loops in one process, 2 threads: random batches (every text padded to the longest
  of its batch, how the first trainer worked) and length-bucketed batches with the trunk cache;
- Ray Train, 1 worker x 2 threads;
- Ray Train, 2 workers x 1 thread (DDP, gloo).
Two epochs each (one for random batches): epoch 1 computes the frozen trunk, epoch 2 reads it from
the cache.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

STEPS_EXAMPLES = 1536


def plain_loop(cfg, bucketed: bool, epochs: int) -> list[float]:
    """samples/s per epoch of a one-process loop doing the same steps as a Ray Train worker."""
    from ecrec.learning.batching import TrunkCache
    from ecrec.text.classifier import BranchClassifier
    from ecrec.learning.finetune_data import load_task
    from training.finetune import _base_model, _loader, _prefix

    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    data = load_task(cfg)
    tok, base = _base_model(cfg, None)
    model = BranchClassifier(base, 3, cfg.branch_layers).train()
    opt = torch.optim.AdamW(model.branch.parameters(), lr=cfg.lr)
    loader = _loader(tok, _prefix(cfg, data.train.texts), data.train.labels, None, cfg, 0, 1)
    cache = TrunkCache(model.base, model.split) if bucketed else None
    if not bucketed:  # random batches: each padded to its longest text
        loader = torch.utils.data.DataLoader(range(len(data.train.texts)), batch_size=cfg.batch_size,
                                             shuffle=True, collate_fn=loader.collate_fn)
    rates = []
    for epoch in range(epochs):
        if bucketed:
            loader.batch_sampler.set_epoch(epoch)
        t0, n = time.perf_counter(), 0
        for index, ids, mask, y, _ in loader:
            trunk = cache.batch(index.tolist(), ids, mask) if cache is not None else None
            loss = torch.nn.functional.cross_entropy(model(ids, mask, trunk=trunk), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(y)
        rates.append(n / (time.perf_counter() - t0))
    return rates


def main() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from ecrec.learning.finetune_data import FinetuneConfig
    from training.cli import CONFIGS
    from training.finetune import run

    base = FinetuneConfig.from_yaml(CONFIGS / "cpu.yaml", train_limit=STEPS_EXAMPLES // 2 * 10 // 9,
                                    eval_test=False, epochs=2, patience=0, calibrate=False, extra_zh_binary=0)
    one = dataclasses.replace(base, workers=1, batch_size=32)
    rows = [("plain PyTorch, random batches, no cache (baseline)", plain_loop(one, False, 1), None),
            ("plain PyTorch, length buckets + trunk cache", plain_loop(one, True, 2), None)]
    from deployments.ray_private import local_init_kwargs

    ray.init(**local_init_kwargs(2, 512 * 1024**2))
    for label, workers, threads in (("Ray Train, 1 worker x 2 threads", 1, 2), ("Ray Train, 2 workers x 1 thread (DDP)", 2, 1)):
        cfg = dataclasses.replace(base, workers=workers, threads_per_worker=threads, batch_size=32 // workers)
        with tempfile.TemporaryDirectory() as d:
            m = run(cfg, Path(d) / "out", Path(d) / "storage", name=f"bench-{workers}")
        rows.append((label, m["last_epoch"]["epoch_samples_per_s"], m["fit_wall_s"]))
    ray.shutdown()
    base_rate = rows[0][1][0]
    plain = rows[1][1]
    lines = ["| setup | epoch 1 samples/s | epoch 2 samples/s (cached trunk) | epoch 1 / 2 vs baseline "
             "| vs plain bucketed loop | whole `fit()` wall s |", "|---|---|---|---|---|---|"]
    for n, r, w in rows:
        e2 = f"{r[1]:.1f}" if len(r) > 1 else ""
        vs = " / ".join(f"{x / base_rate:.2f}" for x in r)
        vp = " / ".join(f"{x / p:.2f}" for x, p in zip(r, plain)) if len(r) > 1 else ""
        lines.append(f"| {n} | {r[0]:.1f} | {e2} | {vs} | {vp} | {'' if w is None else f'{w:.0f}'} |")
    body = "\n".join([
        "## Fine-tuning throughput (CPU)", "", f"Machine: {machine()}.", "",
        "Command: `.venv/bin/python bench/train_throughput.py`", "",
        f"e5-small with a {base.branch_layers}-layer trainable branch, max_length {base.max_length}, "
        f"32 examples per optimiser step in total, {STEPS_EXAMPLES} MARC examples "
        f"(median {int(np.median(_lengths(base)))} tokens).", "", *lines, "",
        "Length buckets stop padding short reviews to the longest in a random batch; the trunk cache "
        "keeps the frozen layers' output after epoch 1, so later epochs run only the trained layers. "
        "`fit()` wall time includes Ray Train's fixed start-up (worker group, placement group, model load) "
        "and the per-epoch dev evaluation and export; the samples/s columns count training steps only, "
        "so the last-but-one column is Ray Train's per-step overhead against the same loop in one process.",
    ])
    write_section("train", body)


def _lengths(cfg) -> list[int]:
    from ecrec.learning.finetune_data import load_task
    from training.finetune import _base_model, _prefix

    data = load_task(cfg)
    tok, _ = _base_model(cfg, None)
    return [len(x) for x in tok(_prefix(cfg, data.train.texts), truncation=True, max_length=cfg.max_length)["input_ids"]]


if __name__ == "__main__":
    main()
