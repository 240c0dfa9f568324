"""``ecrec train sentiment|intent|aspects --config training/configs/cpu.yaml``."""
from __future__ import annotations

import json
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"


def _train(args) -> None:
    from ecrec.learning.finetune_data import FinetuneConfig

    overrides = {"task": args.task, "data_dir": str(args.data) if args.data else None, "workers": args.workers,
                 "epochs": args.epochs}
    overrides.update(_settings(args.set))  # --set wins
    args.config = args.config or CONFIGS / ("cpu-aspects.yaml" if args.task == "aspects" else "cpu.yaml")
    cfg = FinetuneConfig.from_yaml(args.config, **overrides)
    out = args.out or Path("runs") / f"{cfg.task}-{Path(args.config).stem}"
    if cfg.task == "aspects":
        from training.aspects import run, run_local
        run = run_local if args.local else run
    elif args.local:
        from training.local import run_local as run
    else:
        from training.finetune import run
    home = str(args.home) if args.home else None
    name = args.name or f"{cfg.task}-{Path(args.config).stem}" + ("-local" if args.local else "")
    metrics = run(cfg, out, args.storage, name=name, home=home)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("config", "curve")}, indent=2, default=float,
                     ensure_ascii=False))
    if cfg.task == "aspects":
        print(f"outputs in {out}: branch.safetensors (ecrec eval-aspects --branch ...), metrics.json")
        return
    print(f"outputs in {out}: branch.safetensors (serve it with sentiment_head=...), model/, metrics.json, "
          f"classification_report.txt, confusion_*.png")


def _settings(pairs: list[str]) -> dict:
    """``--set key=value`` overrides, values parsed as YAML (``branch_layers=12``, ``train_limit=3000``)."""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def ray_installed() -> bool:
    """Whether ``import ray`` can work here (asked without importing it: every command pays for that)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def register(sub) -> None:
    from training import retrain, sequence

    sequence.register(sub)
    retrain.register(sub)
    if ray_installed() and "eval" in sub.choices:  # `ecrec eval` trains a missing sequence model with Ray Train
        sub.choices["eval"].set_defaults(sequence_trainer=sequence.fit)
    p = sub.add_parser("train", help="fine-tune with Ray Train")
    p.add_argument("task", choices=["sentiment", "intent", "aspects"])
    p.add_argument("--config", type=Path, default=None,
                   help="default training/configs/cpu.yaml (cpu-aspects.yaml for aspects)")
    p.add_argument("--data", type=Path, default=None, help="shared data folder (default from config)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--storage", type=Path, default=Path("runs/ray"), help="Ray Train storage (checkpoints)")
    p.add_argument("--name", default=None, help="run name; re-running it resumes from its last checkpoint")
    p.add_argument("--local", action="store_true",
                   help="train in this process without Ray (one GPU with use_gpu: true, else the CPU); "
                        "the same loop, workers forced to 1")
    p.set_defaults(fn=_train)
