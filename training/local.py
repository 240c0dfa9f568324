"""The fine-tuning loop in this one process, without Ray (``ecrec train ... --local``).

For one GPU, or a machine where Ray is not installed: ``train_loop`` (the code every Ray Train
worker runs) with a ``LocalSession`` in place of Ray Train's context. Checkpoints go to
``storage/name/checkpoint_NNNNNN`` (the last two kept); re-running the same name resumes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import time
from pathlib import Path

import torch

from ecrec.learning.finetune_data import FinetuneConfig


class LocalSession:
    """Rank 0 of 1 on ``device``: what ``RaySession`` gives a worker, with checkpoints on disk."""

    rank, world = 0, 1

    def __init__(self, storage: Path, device: torch.device, keep: int = 2):
        self.storage, self.device, self.keep = Path(storage), device, keep
        self.storage.mkdir(parents=True, exist_ok=True)
        self.metrics: dict = {}

    def prepare_model(self, model):
        return model.to(self.device)

    def prepare_loader(self, loader):
        return loader  # the loop moves each batch to the device

    def _checkpoints(self) -> list[Path]:
        # its own names only: a Ray Train run in the same folder writes checkpoint_<date>_<time>
        return sorted(p for p in self.storage.glob("checkpoint_*") if re.fullmatch(r"checkpoint_\d{6}", p.name))

    @contextlib.contextmanager
    def checkpoint(self):
        found = self._checkpoints()
        yield found[-1] if found else None

    def report(self, metrics: dict, directory: Path | None) -> None:
        self.metrics = metrics
        with (self.storage / "progress.jsonl").open("a") as f:
            f.write(json.dumps(metrics, default=float) + "\n")
        if directory is None:
            return
        dest = self.storage / f"checkpoint_{metrics['epoch']:06d}"
        tmp = self.storage / f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(directory, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)  # a checkpoint is whole or absent, also if the process dies mid-copy
        for old in self._checkpoints()[: -self.keep]:
            shutil.rmtree(old)

    def gather(self, obj) -> list:
        return [obj]

    def progress_bar(self, total: int, desc: str):
        return None


def run_local(cfg: FinetuneConfig, out_dir: str | Path, storage: str | Path, name: str | None = None,
              home: str | None = None) -> dict:
    """Fit in this process (one GPU when ``use_gpu``, else the CPU), then export like ``run``."""
    from training.finetune import export, train_loop

    if cfg.use_gpu and not torch.cuda.is_available():
        raise SystemExit("use_gpu is set but torch sees no CUDA device here: train on the CPU with "
                         "--set use_gpu=false, or run on a machine with a GPU")
    device = torch.device("cuda" if cfg.use_gpu else "cpu")
    out_dir, storage = Path(out_dir).resolve(), Path(storage).resolve()
    cfg = dataclasses.replace(cfg, workers=1, data_dir=str(Path(cfg.data_dir).resolve()))
    name = name or f"{cfg.task}-{cfg.model}-local"
    session = LocalSession(storage / name, device)
    home = home or os.environ.get("ECREC_HOME")
    t0 = time.perf_counter()
    train_loop({"cfg": cfg.to_dict(), "home": home}, session)
    wall = time.perf_counter() - t0
    with session.checkpoint() as d:
        return export(cfg, d, session.metrics, out_dir, wall, home, device)
