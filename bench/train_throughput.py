"""Training throughput on this machine, side by side in one run (writes the "train" section).

    .venv/bin/python bench/train_throughput.py     # ~4 min

Same model (e5-small, 3-layer branch), same data (MARC zh+en, 1,536 examples, max_length 128,
32 per step in total), same number of steps:
- a plain PyTorch loop in one process, 2 threads (the baseline);
- Ray Train, 1 worker x 2 threads;
- Ray Train, 2 workers x 1 thread (DDP, gloo).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

STEPS_EXAMPLES = 1536


def plain_loop(cfg) -> float:
    from ecrec.classifier import BranchClassifier
    from ecrec.finetune_data import load_task
    from training.finetune import _base_model, _batches, _prefix

    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    data = load_task(cfg)
    tok, base = _base_model(cfg, None)
    model = BranchClassifier(base, 3, cfg.branch_layers).train()
    opt = torch.optim.AdamW(model.branch.parameters(), lr=cfg.lr)
    loader = _batches(tok, _prefix(cfg, data.train.texts), data.train.labels,
                      dataclasses.replace(cfg, batch_size=cfg.batch_size * cfg.workers), True, 0)
    t0, n = time.perf_counter(), 0
    for ids, mask, y in loader:
        loss = torch.nn.functional.cross_entropy(model(ids, mask), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    return n / (time.perf_counter() - t0)


def main() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from ecrec.finetune_data import FinetuneConfig
    from training.cli import CONFIGS
    from training.finetune import run

    base = FinetuneConfig.from_yaml(CONFIGS / "cpu.yaml", train_limit=STEPS_EXAMPLES // 2 * 10 // 9,
                                    eval_test=False, epochs=1)
    rows = [("plain PyTorch, 1 process x 2 threads (baseline)", plain_loop(dataclasses.replace(base, workers=1, batch_size=32)), None)]
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 1024**2, _node_ip_address="127.0.0.1")
    for label, workers, threads in (("Ray Train, 1 worker x 2 threads", 1, 2), ("Ray Train, 2 workers x 1 thread (DDP)", 2, 1)):
        cfg = dataclasses.replace(base, workers=workers, threads_per_worker=threads, batch_size=32 // workers)
        with tempfile.TemporaryDirectory() as d:
            m = run(cfg, Path(d) / "out", Path(d) / "storage", name=f"bench-{workers}")
        rows.append((label, m["last_epoch"]["samples_per_s"], m["fit_wall_s"]))
    ray.shutdown()
    base_rate = rows[0][1]
    lines = ["| setup | samples/s (train steps only) | ratio vs plain loop | whole `fit()` wall s |", "|---|---|---|---|"]
    lines += [f"| {n} | {r:.1f} | {r / base_rate:.2f} | {'' if w is None else f'{w:.0f}'} |" for n, r, w in rows]
    body = "\n".join([
        "## Fine-tuning throughput (CPU)", "", f"Machine: {machine()}.", "",
        "Command: `.venv/bin/python bench/train_throughput.py`", "",
        f"e5-small with a {base.branch_layers}-layer trainable branch, max_length {base.max_length}, "
        f"32 examples per optimiser step in total, one epoch over {STEPS_EXAMPLES} MARC examples.", "", *lines, "",
        "`fit()` wall time includes Ray Train's fixed start-up (worker group, placement group, model load) "
        "and the per-epoch dev evaluation and export; the samples/s column counts training steps only, "
        "so its ratio is Ray Train's per-step overhead against the plain loop.",
    ])
    write_section("train", body)


if __name__ == "__main__":
    main()
