"""``ecrec retrain sentiment``: export, fine-tune, evaluate against the serving head, promote, roll out.

1. Rated reviews still in the event store's logs (``ecrec.operations.retrain.labelled_reviews``) go
   to ``<out>/reviews.jsonl``.
2. The branch is fine-tuned on the shared training data plus those reviews, with Ray Train: on
   this machine's Ray, or with ``--submit http://127.0.0.1:8265`` as a Ray Job on the cluster
   (its dashboard, bound to 127.0.0.1, reached through an SSH tunnel).
3. Candidate and serving head are evaluated on the same fixed holdout (a seeded slice of MARC test,
   zh and en, ``--holdout`` texts each).
4. The candidate is promoted only if it is not worse on any set (``should_promote``): it is copied
   to ``$ECREC_HOME/heads/``, and a serve config with ``sentiment_head`` pointing at it is written
   next to the run. ``--deploy`` applies it with ``serve deploy``: only the encoder's user_config
   changes, so the running replicas swap the head in place, without dropping a request.
Every step's outcome is in ``<out>/decision.json``.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import yaml


def _stores(args):
    from ecrec.store import SQLiteStore
    from ecrec.store_redis import open_store

    if args.store and args.store != "sqlite":
        return [open_store(args.store, "", "FULL", prefix=args.namespace)]
    return [SQLiteStore(p) for p in sorted(Path(args.state_dir).glob("profiles-*.db"))]


def _holdout(encoder, head, data_dir: str, n: int) -> dict:
    from ecrec.datasets import load_marc
    from ecrec.finetune_data import evaluate
    from ecrec.text_eval import head_logits

    out = {}
    for lang in ("zh", "en"):
        texts, y = load_marc(data_dir, lang, "test")
        idx = __import__("numpy").random.default_rng(0).permutation(len(texts))[:n]
        logits = head_logits(encoder, head, [texts[i] for i in idx])
        m = evaluate(logits.argmax(1), y[idx], ["negative", "neutral", "positive"])
        out[f"marc_{lang}"] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n": len(idx)}
    return out


def _train(args, cfg_overrides: dict, out: Path) -> Path:
    """The candidate branch: here with Ray Train, or as a Ray Job on a cluster."""
    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in cfg_overrides.items()]
    if args.submit:
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(args.submit)
        entry = " ".join(["ecrec", "train", "sentiment", "--config", str(args.config), "--out", str(out / "candidate"),
                          *[f"--set '{s}'" for s in sets]])
        job = client.submit_job(entrypoint=entry, runtime_env={"working_dir": str(Path.cwd())})
        while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            time.sleep(5)
        if status != JobStatus.SUCCEEDED:
            raise SystemExit(f"training job {job} {status}:\n{client.get_job_logs(job)[-3000:]}")
    else:
        from ecrec.finetune_data import FinetuneConfig
        from training.cli import _settings
        from training.finetune import run

        cfg = FinetuneConfig.from_yaml(args.config, task="sentiment", data_dir=str(args.data), **_settings(sets))
        run(cfg, out / "candidate", out / "ray", name=f"retrain-{out.name}", home=str(args.home))
    return out / "candidate" / "branch.safetensors"


def _stamp(candidate: Path, promoted: Path, run: str) -> None:
    """Copy the branch under a name of its own, so /readyz and every list show the new version."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(candidate), "pt") as f:
        meta = json.loads(f.metadata()["ecrec"])
    meta["name"] = f"{meta.get('name', 'sentiment')}-{run}"
    save_file(load_file(str(candidate)), str(promoted), metadata={"ecrec": json.dumps(meta, ensure_ascii=False)})


def _retrain(args) -> None:
    from ecrec.encoder import EncoderConfig, TextEncoder
    from ecrec.operations.retrain import labelled_reviews, should_promote
    from ecrec.sentiment import head_path, load_head

    out = Path(args.out or f"runs/retrain-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    decision: dict = {"task": "sentiment", "out": str(out)}
    since = time.time() - args.since_days * 86400 if args.since_days else 0.0
    reviews = list(labelled_reviews(_stores(args), since))
    with open(out / "reviews.jsonl", "w", encoding="utf-8") as f:
        for r in reviews:
            f.write(json.dumps({"text": r["text"], "label": r["label"]}, ensure_ascii=False) + "\n")
    decision["exported_reviews"] = len(reviews)
    overrides = {"extra_train": str(out / "reviews.jsonl")} if reviews else {}
    from training.cli import _settings

    overrides.update(_settings(args.set))
    candidate = _train(args, overrides, out)

    serve_cfg = yaml.safe_load(Path(args.serve_config).read_text())
    app_args = serve_cfg["applications"][0].setdefault("args", {})
    enc = TextEncoder(EncoderConfig(model=app_args.get("model", "e5-small")), args.home)
    encoder_cfg = [d.get("user_config", {}) for d in serve_cfg["applications"][0].get("deployments", [])
                   if d.get("name") == "Encoder"]
    serving = (encoder_cfg[0].get("sentiment_head") if encoder_cfg else None) or app_args.get("sentiment_head")
    serving_path = head_path(serving, enc.config.model)
    decision["serving_head"], decision["candidate_head"] = str(serving_path), str(candidate)
    decision["holdout"] = {"serving": _holdout(enc, load_head(serving_path, enc), str(args.data), args.holdout),
                           "candidate": _holdout(enc, load_head(candidate, enc), str(args.data), args.holdout)}
    ok, why = should_promote(decision["holdout"]["candidate"], decision["holdout"]["serving"],
                             tolerance=args.tolerance)
    decision.update(promoted=ok, why=why)
    if ok:
        heads = Path(args.home) / "heads"
        heads.mkdir(parents=True, exist_ok=True)
        promoted = heads / f"sentiment-{out.name}.safetensors"
        _stamp(candidate, promoted, out.name)
        decision["version"] = str(promoted.stem)
        encoder = [d for d in serve_cfg["applications"][0].get("deployments", []) if d.get("name") == "Encoder"]
        if encoder:  # the Encoder's user_config: the running replicas swap the head in place
            encoder[0].setdefault("user_config", {})["sentiment_head"] = str(promoted)
        else:  # the app's args: Serve replaces the encoder replicas (new before old)
            app_args["sentiment_head"] = str(promoted)
        new_cfg = out / "serve_config.yaml"
        new_cfg.write_text(yaml.safe_dump(serve_cfg, sort_keys=False, allow_unicode=True))
        decision["serve_config"] = str(new_cfg)
        if args.deploy:
            env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"))
            subprocess.run(["serve", "deploy", str(new_cfg), "--address", args.serve_address], check=True, env=env)
            decision["deployed"] = True
    (out / "decision.json").write_text(json.dumps(decision, indent=2, ensure_ascii=False, default=float))
    print(json.dumps(decision, indent=2, ensure_ascii=False, default=float))


def register(sub) -> None:
    p = sub.add_parser("retrain", help="fine-tune on the store's rated reviews, promote only if not worse, roll out")
    p.add_argument("task", choices=["sentiment"])
    p.add_argument("--state-dir", type=Path, default=None, help="the serving state_dir (SQLite shards)")
    p.add_argument("--store", default="sqlite", help="sqlite (read --state-dir) or redis://host:port/db")
    p.add_argument("--namespace", default="ecrec", help="the app's namespace (Redis key prefix)")
    p.add_argument("--since-days", type=float, default=None, help="only reviews this recent (default: all kept)")
    p.add_argument("--config", type=Path, default=Path(__file__).parent / "configs" / "cpu.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a training setting")
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--holdout", type=int, default=500, help="MARC test texts per language for the comparison")
    p.add_argument("--tolerance", type=float, default=0.0, help="how much worse still counts as not worse")
    p.add_argument("--serve-config", type=Path, default=Path("deployments/serve_config.yaml"))
    p.add_argument("--deploy", action="store_true", help="serve deploy the promoted config")
    p.add_argument("--serve-address", default="http://127.0.0.1:8265", help="Ray dashboard for serve deploy")
    p.add_argument("--submit", default=None, help="train as a Ray Job on this Ray dashboard address")
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(fn=_retrain)
