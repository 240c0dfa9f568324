"""Ray Train for the sequence retriever (``ecrec train sequence``, and ``ecrec eval`` when a
dataset has no checkpoint yet).

``TorchTrainer`` runs ``ecrec.learning.sequence_training.train_sequence`` on N workers (DDP over gloo on
CPU, NCCL on GPU); each takes every N-th length bucket. Rank 0 reports a checkpoint whenever
valid NDCG@10 improves; re-running the same run name and storage path resumes from it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


# torch and the model modules are imported where they are used: `ecrec --help` lists this module's
# command without loading torch (tests/test_core_boundary.py)


def config_from_dict(d: dict) -> SequenceTrainConfig:
    from ecrec.retrieval.sequence import SequenceConfig
    from ecrec.learning.sequence_training import SequenceTrainConfig

    d = dict(d)
    return SequenceTrainConfig(model=SequenceConfig(**d.pop("model")), **d)


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from ecrec.evaluation.data import load_dataset
    from ecrec.learning.sequence_training import train_sequence

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = config_from_dict(config["cfg"])
    ds = load_dataset(config["data"], config["fmt"])
    if config.get("users"):
        ds = ds.user_slice(config["users"])
    X = np.load(config["x_path"])
    start = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = torch.load(Path(d) / "best.pt", map_location="cpu", weights_only=True)

    def report(row: dict, best: dict | None) -> None:
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0 and best is not None:
                torch.save(best, Path(d) / "best.pt")
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(row, checkpoint=checkpoint)

    train_sequence(X, ds.train_sequences(cfg.include_valid), ds.valid, cfg, rank, world,
                   wrap=ray.train.torch.prepare_model, report=report, start=start)


def fit(X: np.ndarray, ds, cfg: SequenceTrainConfig, data_dir: str | Path | None = None, fmt: str = "auto",
        storage: str | Path = "runs/ray", name: str | None = None, users: int | None = None,
        init_from: str | Path | None = None):
    """Train under Ray Train; returns (best model, report). ``data_dir`` defaults to where ``ds``
    was read from (workers reload it; only paths travel); ``users``: ``ds`` is that
    ``user_slice`` of it; ``init_from``: a sequence model to fine-tune (its weights where the shapes
    agree, its id rows for the items it knows)."""
    import torch
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ecrec.retrieval.sequence import SequenceModel

    data_dir = Path(data_dir or ds.source).resolve()
    storage = Path(storage).resolve()
    from training.cluster import connect

    cpus = cfg.cpus_per_worker or cfg.threads
    connect(max(2, cfg.workers * cfg.threads), 256 * 1024**2, cfg.workers, cpus, use_gpu=False)
    with tempfile.TemporaryDirectory() as tmp:
        x_path = Path(tmp) / "items.npy"
        np.save(x_path, np.asarray(X, np.float32))
        if init_from is not None:
            from ecrec.retrieval.sequence import load_sequence_model, warm_state

            init_path = Path(tmp) / "init.pt"
            torch.save(warm_state(SequenceModel(cfg.model), load_sequence_model(init_from)[0],
                                  [it.id for it in ds.items]), init_path)
            cfg = dataclasses.replace(cfg, init_path=str(init_path))
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": dataclasses.asdict(cfg), "data": str(data_dir), "fmt": fmt,
                               "x_path": str(x_path), "users": users},
            scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=False,
                                         resources_per_worker={"CPU": cpus}),
            run_config=RunConfig(name=name or f"sequence-{ds.name}", storage_path=str(storage),
                                 checkpoint_config=CheckpointConfig(num_to_keep=1)),
        )
        t0 = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - t0
    if result.checkpoint is None:
        raise RuntimeError(f"sequence training produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:
        best = torch.load(Path(d) / "best.pt", map_location="cpu", weights_only=True)
    model = SequenceModel(cfg.model)
    model.load_state_dict(best["weights"])
    model.eval()
    history = [m for m in (result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None
                           else [])]
    report = {"best_epoch": best["epoch"], "valid_ndcg10": best["ndcg10"], "fit_wall_s": round(wall, 1),
              "workers": cfg.workers, "history": [{k: r[k] for k in ("epoch", "loss", "valid_ndcg10", "seconds")
                                                   if k in r} for r in history]}
    return model, report


def typed_settings(cls, settings: dict) -> dict:
    """``--set`` values cast to the type of the dataclass field they set (YAML reads ``3e-3`` as a
    string); an unknown key is refused with the keys there are."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in settings.items():
        if key not in fields:
            raise SystemExit(f"--set {key}: not a setting; the settings are {', '.join(sorted(fields))}")
        kind = type(fields[key].default)
        try:
            out[key] = kind(value) if kind in (int, float) and not isinstance(value, bool) else value
        except (TypeError, ValueError):
            raise SystemExit(f"--set {key}={value!r}: needs a {kind.__name__}") from None
    return out


def train_and_save(data: Path, out: Path, *, fmt: str = "auto", vectors: Path | None = None, ids: bool = True,
                   init: Path | None = None, settings: dict | None = None, workers: int = 2, threads: int = 1,
                   epochs: int = 40, time_cap_s: float = 900.0, include_valid: bool = False,
                   storage: Path = Path("runs/ray"), name: str | None = None, home: Path | None = None) -> Path:
    """Train the sequence retriever on ``data`` with Ray Train and save it to ``out`` (with
    ``sequence_report.json`` beside it): what ``ecrec train-sequence`` runs, and what ``ecrec retrain
    sequence`` calls directly. ``vectors``: the items' vectors (the served index's), else their text is
    encoded; ``settings``: ``SequenceTrainConfig`` fields (``--set``), cast to their types."""
    from ecrec.evaluation.data import load_dataset
    from ecrec.evaluation.harness import item_vectors
    from ecrec.retrieval.sequence import SequenceConfig, load_sequence_model, save_sequence_model
    from ecrec.text.encoder import EncoderConfig, TextEncoder, default_home
    from ecrec.learning.sequence_training import SequenceTrainConfig

    ds = load_dataset(data, fmt)
    if vectors:  # the vectors the served index holds, exported with the data
        X = np.load(vectors)
        if X.shape[0] != ds.n_items:
            raise SystemExit(f"{vectors}: {X.shape[0]} vectors for {ds.n_items} items")
    else:
        home = home or default_home()
        X = item_vectors(ds, TextEncoder(EncoderConfig(), home), home / "cache")
    base = load_sequence_model(init)[0].config if init else SequenceConfig()
    model_cfg = dataclasses.replace(base, id_items=ds.n_items if ids else 0)
    cfg = SequenceTrainConfig(model=model_cfg, workers=workers, threads=threads, epochs=epochs,
                              time_cap_s=time_cap_s, include_valid=include_valid)
    cfg = dataclasses.replace(cfg, **typed_settings(SequenceTrainConfig, settings or {}))
    model, report = fit(X, ds, cfg, data, fmt, storage, name, init_from=init)
    vocab = [it.id for it in ds.items] if ids else []
    saved = save_sequence_model(model, out, {"dataset": ds.name, "items": ds.n_items, "vocab": vocab,
                                             "trained_on": "train+valid" if include_valid else "train",
                                             **{k: v for k, v in report.items() if k != "history"}})
    (saved.parent / "sequence_report.json").write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2, default=float))
    return saved


def _train(args) -> None:
    from training.cli import _settings

    out = train_and_save(args.data, args.out, fmt=args.format, vectors=args.vectors, ids=args.ids, init=args.init,
                         settings=_settings(args.set), workers=args.workers, threads=args.threads,
                         epochs=args.epochs, time_cap_s=args.time_cap, include_valid=args.include_valid,
                         storage=args.storage, name=args.name, home=args.home)
    print(f"saved {out} (serve it with sequence_model={out})")


def register(sub) -> None:
    p = sub.add_parser("train-sequence", help="train the sequence retriever with Ray Train")
    p.add_argument("--data", type=Path, default=Path("../shared/data/recsys/amazon_scientific"))
    p.add_argument("--format", default="auto", choices=["auto", "unisrec", "recbole"])
    p.add_argument("--ids", action=argparse_bool(), default=True,
                   help="learn id embeddings for the training catalog's items (on by default)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--time-cap", type=float, default=900.0, help="seconds")
    p.add_argument("--include-valid", action="store_true",
                   help="train on train + valid targets for exactly --epochs (the final model for the test split)")
    p.add_argument("--vectors", type=Path, default=None,
                   help="item vectors (.npy, the .item file's order) instead of encoding the items' text")
    p.add_argument("--init", type=Path, default=None, help="fine-tune this sequence model (e.g. the serving one)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a training setting (lr=1e-3)")
    p.add_argument("--out", type=Path, default=Path("runs/sequence/sequence.safetensors"))
    p.add_argument("--storage", type=Path, default=Path("runs/ray"))
    p.add_argument("--name", default=None, help="run name; re-running it resumes from its last checkpoint")
    p.set_defaults(fn=_train)


def argparse_bool():
    import argparse

    return argparse.BooleanOptionalAction
