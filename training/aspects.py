"""``ecrec train aspects``: the aspect branch's loop (``ecrec.learning.aspect_training``) on Ray
Train workers, or with ``--local`` in this process (``training.local.LocalSession``)."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from ecrec.learning.finetune_data import FinetuneConfig


def train_loop_per_worker(config: dict) -> None:
    from ecrec.learning.aspect_training import train_loop
    from training.finetune import RaySession

    train_loop(config, RaySession())


def run_local(cfg: FinetuneConfig, out_dir, storage, name: str | None = None, home: str | None = None) -> dict:
    from ecrec.learning.aspect_training import export, train_loop
    from training.local import LocalSession

    if cfg.use_gpu and not torch.cuda.is_available():
        raise SystemExit("use_gpu is set but torch sees no CUDA device here: --set use_gpu=false")
    device = torch.device("cuda" if cfg.use_gpu else "cpu")
    cfg = dataclasses.replace(cfg, workers=1, data_dir=str(Path(cfg.data_dir).resolve()))
    session = LocalSession(Path(storage).resolve() / (name or "aspects-local"), device)
    home = home or os.environ.get("ECREC_HOME")
    t0 = time.perf_counter()
    train_loop({"cfg": cfg.to_dict(), "home": home}, session)
    wall = time.perf_counter() - t0
    with session.checkpoint() as d:
        return export(cfg, d, Path(out_dir).resolve(), wall, home)


def run(cfg: FinetuneConfig, out_dir, storage, name: str | None = None, home: str | None = None) -> dict:
    """Ray Train: ``cfg.workers`` DDP workers, each training on its share of the sentences."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ecrec.learning.aspect_training import export
    from training.cluster import connect

    cfg = dataclasses.replace(cfg, data_dir=str(Path(cfg.data_dir).resolve()))
    cpus = cfg.cpus_per_worker or cfg.threads_per_worker
    connect(max(2, cfg.workers * cfg.threads_per_worker), 512 * 1024**2, cfg.workers, cpus, cfg.use_gpu)
    home = home or os.environ.get("ECREC_HOME")
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config={"cfg": cfg.to_dict(), "home": home},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=name or "aspects", storage_path=str(Path(storage).resolve()),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    with result.checkpoint.as_directory() as d:
        return export(cfg, Path(d), Path(out_dir).resolve(), wall, home)
