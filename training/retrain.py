"""``ecrec retrain sentiment|intent|sequence``: export, fine-tune, evaluate against the serving model, promote, roll out.

1. The labelled data goes to ``<out>/labelled.jsonl``: for sentiment, the rated reviews still in
   the event store's logs (``ecrec.operations.retrain_policy.labelled_reviews``); for intent, the
   utterances the help desk labelled (``--labelled``): the store holds no intent labels, only
   the intents the model itself predicted.
2. The branch is fine-tuned on the shared training data plus that file, with Ray Train: on
   this machine's Ray, or with ``--submit http://127.0.0.1:8265`` as a Ray Job on the cluster
   (its dashboard, bound to 127.0.0.1, reached through an SSH tunnel).
3. Candidate and serving head are evaluated on the same fixed holdout: a seeded slice of
   ``--holdout`` texts of each test set (MARC test zh and en; the held-out intent sets).
4. The candidate is promoted only if it is not worse on any set (``should_promote``): it is copied
   to ``$ECREC_HOME/heads/``, and a serve config whose Encoder user_config names it is written
   next to the run. ``--deploy`` applies it with ``serve deploy``: only the encoder's user_config
   changes, so the running replicas swap the head in place, without dropping a request.
Each step prints ``[i/4]`` as it starts; every outcome is in ``<out>/decision.json``.

``retrain sequence`` follows the same four steps for the sequence retriever (``_retrain_sequence``):
the shoppers' click sequences over the served index artifact are exported as RecBole files
(``<out>/data``, with the artifact's vectors), the serving model is fine-tuned on them (``ecrec
train-sequence --init``: its weights, new id rows for this catalog), both are scored leave-last-out
on each shopper's last item, and a promoted model is rolled out as the app's ``sequence_model``
arg: Serve starts new ingress replicas (with new retrievers) before it stops the old ones.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import yaml


def _stores(args, state_dir: Path | None = None):
    """The serving store: Redis by URL, or the SQLite shards of ``--state-dir`` (else the app's)."""
    from ecrec.profiles.store import SQLiteStore
    from ecrec.profiles.store_redis import open_store

    if args.store and args.store != "sqlite":
        return [open_store(args.store, "", "FULL", prefix=args.namespace)]
    folder = Path(args.state_dir or state_dir or "")
    stores = [SQLiteStore(p) for p in sorted(folder.glob("profiles-*.db"))]
    if not stores:
        raise SystemExit(f"no profile store (profiles-*.db) in {folder}: pass the serving --state-dir or --store")
    return stores


def _holdout(task: str, encoder, head, data_dir: str, n: int) -> dict:
    """The fixed holdout both heads are scored on: a seeded slice of ``n`` texts of each test set
    (sentiment: MARC test zh and en; intent: every held-out intent set)."""
    from ecrec.learning.datasets import load_marc
    from ecrec.learning.finetune_data import FinetuneConfig, evaluate, load_task
    from ecrec.evaluation.text_eval import head_logits

    if task == "sentiment":
        labels = ["negative", "neutral", "positive"]
        sets = {f"marc_{lang}": load_marc(data_dir, lang, "test") for lang in ("zh", "en")}
    else:
        data = load_task(FinetuneConfig(task="intent", data_dir=data_dir, eval_test=True))
        labels, sets = data.labels, {name: (split.texts, split.labels) for name, split in data.tests.items()}
        if list(head.labels) != labels:
            raise SystemExit(f"the head {head.info.get('name')!r} has other intents than the task's")
    out = {}
    for name, (texts, y) in sets.items():
        idx = np.random.default_rng(0).permutation(len(texts))[:n]
        logits = head_logits(encoder, head, [texts[i] for i in idx])
        m = evaluate(logits.argmax(1), np.asarray(y)[idx], labels)
        out[name] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n": len(idx)}
    return out


def _export(args, out: Path) -> int:
    """The task's labelled examples into ``<out>/labelled.jsonl``: rated reviews from the event
    store (sentiment), or the operator's labelled utterances (intent: the store keeps only the
    intents the model itself predicted, and training on those would only repeat its mistakes)."""
    from ecrec.learning.finetune_data import read_labelled
    from ecrec.operations.retrain_policy import labelled_reviews

    if args.task == "sentiment":
        since = time.time() - args.since_days * 86400 if args.since_days else 0.0
        rows = [{"text": r["text"], "label": r["label"]} for r in labelled_reviews(_stores(args), since)]
    else:
        from ecrec.learning.intent_data import intent_labels

        names = intent_labels(str(args.data))
        texts, ids = read_labelled(args.labelled, names)  # refuses unknown intents, naming the line
        rows = [{"text": t, "label": names[i]} for t, i in zip(texts, ids)]
    with open(out / "labelled.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(rows)


def _train(args, cfg_overrides: dict, out: Path) -> Path:
    """The candidate branch: here with Ray Train, or as a Ray Job on a cluster."""
    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in cfg_overrides.items()]
    if args.submit:
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(args.submit)
        entry = shlex.join(["ecrec", "train", args.task, "--config", str(args.config), "--out", str(out / "candidate"),
                            *[x for kv in sets for x in ("--set", kv)]])
        job = client.submit_job(entrypoint=entry, runtime_env={"working_dir": str(Path.cwd())})
        while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            time.sleep(5)
        if status != JobStatus.SUCCEEDED:
            raise SystemExit(f"training job {job} {status}:\n{client.get_job_logs(job)[-3000:]}")
    else:
        from ecrec.learning.finetune_data import FinetuneConfig
        from training.cli import _settings
        from training.finetune import run

        cfg = FinetuneConfig.from_yaml(args.config, task=args.task, data_dir=str(args.data), **_settings(sets))
        run(cfg, out / "candidate", out / "ray", name=f"retrain-{out.name}", home=str(args.home))
    return out / "candidate" / "branch.safetensors"


def _stamp(candidate: Path, promoted: Path, run: str) -> None:
    """Copy the branch under a name of its own, so /readyz and every list show the new version."""
    from safetensors.torch import load_file, save_file

    from ecrec.text.classifier import branch_meta

    meta = branch_meta(candidate)
    meta["name"] = f"{meta.get('name', 'sentiment')}-{run}"
    save_file(load_file(str(candidate)), str(promoted), metadata={"ecrec": json.dumps(meta, ensure_ascii=False)})


def _task_labels(task: str, data_dir: str) -> list[str]:
    from ecrec.learning.datasets import SENTIMENT_LABELS
    from ecrec.learning.intent_data import intent_labels

    return list(SENTIMENT_LABELS) if task == "sentiment" else intent_labels(data_dir)


HEAD_KEY = {"sentiment": "sentiment_head", "intent": "intent_head"}  # AppArgs / Encoder user_config key


def _serving_head(task: str, serve_cfg: dict, model: str) -> Path | None:
    """The head the serve config serves for ``task``: the Encoder's user_config wins over the args."""
    from ecrec.text.sentiment import head_path, intent_head_path

    app = serve_cfg["applications"][0]
    encoder_cfg = [d.get("user_config") or {} for d in app.get("deployments", []) if d.get("name") == "Encoder"]
    choice = (encoder_cfg[0].get(HEAD_KEY[task]) if encoder_cfg else None) or app.get("args", {}).get(HEAD_KEY[task])
    return head_path(choice, model) if task == "sentiment" else intent_head_path(choice, model)


def _retrain(args) -> None:
    if args.since_days is not None and args.task != "sentiment":
        # it used to be ignored: a retrain on "the last 7 days" trained on everything kept
        raise SystemExit(f"--since-days is for sentiment (rated reviews carry their time): {args.task} trains "
                         + ("on the --labelled file as given" if args.task == "intent"
                            else "on each shopper's recent clicks, which the profile keeps without times"))
    if args.task == "sequence":
        return _retrain_sequence(args)
    from ecrec.text.encoder import EncoderConfig, TextEncoder
    from ecrec.operations.retrain_policy import should_promote, start_from
    from ecrec.text.sentiment import load_head
    from ecrec.learning.finetune_data import FinetuneConfig
    from training.cli import CONFIGS, _settings

    if args.task == "sentiment" and args.labelled:
        raise SystemExit("--labelled is for intent: sentiment labels come from the store's rated reviews")
    if args.task == "intent" and not args.labelled:
        raise SystemExit("retrain intent needs --labelled FILE: the event store holds no intent labels, only "
                         "the intents the model predicted")
    args.config = args.config or CONFIGS / ("cpu.yaml" if args.task == "sentiment" else "cpu-intent.yaml")
    out = Path(args.out or f"runs/retrain-{args.task}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    decision: dict = {"task": args.task, "out": str(out)}
    serve_cfg = yaml.safe_load(Path(args.serve_config).read_text())
    app_args = serve_cfg["applications"][0].setdefault("args", {})
    serving_path = _serving_head(args.task, serve_cfg, app_args.get("model", "e5-small"))
    step = _steps(args.task)
    step("export the labelled data")
    decision["exported"] = _export(args, out)
    overrides = {"extra_train": str(out / "labelled.jsonl")} if decision["exported"] else {}
    overrides.update(_settings(args.set))
    cfg = FinetuneConfig.from_yaml(args.config, task=args.task, data_dir=str(args.data), **overrides)
    init, decision["start"] = start_from(serving_path, cfg.branch_layers, _task_labels(args.task, str(args.data)),
                                          args.from_scratch)
    if init:
        overrides["init_branch"] = init
    step(f"fine-tune the candidate (Ray Train), {decision['start']}")
    candidate = _train(args, overrides, out)

    step("score the serving and the candidate head on the fixed holdout")
    enc = TextEncoder(EncoderConfig(model=app_args.get("model", "e5-small")), args.home)
    decision["serving_head"], decision["candidate_head"] = str(serving_path), str(candidate)
    holdout = {"candidate": _holdout(args.task, enc, load_head(candidate, enc), str(args.data), args.holdout)}
    if serving_path is not None:
        holdout["serving"] = _holdout(args.task, enc, load_head(serving_path, enc), str(args.data), args.holdout)
        ok, why = should_promote(holdout["candidate"], holdout["serving"], tolerance=args.tolerance)
    else:
        ok, why = True, "no intent head serves yet: nothing to be worse than"
    decision.update(holdout=holdout, promoted=ok, why=why)
    step(f"{'promote' if ok else 'keep the serving head'}: {why}")
    if ok:
        heads = Path(args.home) / "heads"
        heads.mkdir(parents=True, exist_ok=True)
        promoted = heads / f"{args.task}-{out.name}.safetensors"
        _stamp(candidate, promoted, out.name)
        decision["version"] = str(promoted.stem)
        encoder = [d for d in serve_cfg["applications"][0].get("deployments", []) if d.get("name") == "Encoder"]
        if encoder:  # the Encoder's user_config: the running replicas swap the head in place
            encoder[0].setdefault("user_config", {})[HEAD_KEY[args.task]] = str(promoted)
        else:  # the app's args: Serve replaces the encoder replicas (new before old)
            app_args[HEAD_KEY[args.task]] = str(promoted)
        _roll_out(args, serve_cfg, out, decision)
    _record(out, decision)


def _retrain_sequence(args) -> None:
    from deployments.config import AppArgs
    from ecrec.retrieval.artifact import read_artifact
    from ecrec.evaluation.data import load_dataset
    from ecrec.operations.retrain_policy import click_sequences, sequence_holdout, should_promote, write_recbole
    from ecrec.retrieval.sequence import load_sequence_model, shipped_sequence_path

    if args.labelled:
        raise SystemExit("--labelled is for intent: sequences come from the store's click logs")
    if args.min_users < 1:
        raise SystemExit("--min-users must be at least 1")
    out = Path(args.out or f"runs/retrain-sequence-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    if (out / "decision.json").exists() or (out / "data").exists():
        # its Ray Train run would resume a checkpoint of other data, and its promoted name is taken
        raise SystemExit(f"{out} holds an earlier retrain: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    serve_cfg = yaml.safe_load(Path(args.serve_config).read_text())
    app_args = serve_cfg["applications"][0].setdefault("args", {})
    app = AppArgs(**app_args)
    if app.sequence_model == "none":
        raise SystemExit("the serve config turns the sequence retriever off (sequence_model: none): "
                         "name a model there (or remove the line for the shipped one) to retrain it")
    items, index, manifest = read_artifact(app.resolved_index_dir())
    ids = [it.id for it in items]
    X = np.stack([index.vector(i) for i in ids]).astype(np.float32)
    serving = shipped_sequence_path(app.model) if app.sequence_model is None else Path(app.sequence_model)
    if app.sequence_model is None and not serving.exists():
        serving = None  # no shipped retriever for this encoder: none serves (as ``load_sequence`` decides)
    decision: dict = {"task": "sequence", "out": str(out), "serving_model": str(serving) if serving else None,
                      "artifact_id": manifest.get("artifact_id")}
    step = _steps("sequence")

    step("export the shoppers' click sequences")
    seqs = list(click_sequences(_stores(args, app.resolved_state_dir()), set(ids), dim=X.shape[1]))
    data, decision["exported"] = write_recbole(out / "data", items, seqs)
    np.save(data / "vectors.npy", X)
    if decision["exported"] < args.min_users:
        raise SystemExit(f"only {decision['exported']} shoppers have 3 or more clicks on catalog items "
                         f"(--min-users {args.min_users}): too few to train or to judge a model on")

    step("fine-tune the candidate (Ray Train)")
    candidate = out / "candidate" / "sequence.safetensors"
    # id rows cost catalog x 384 floats in every retriever and a scan per request: text only past a size
    with_ids = len(ids) <= args.max_id_items
    if args.submit:  # a Ray Job needs a command line; the paths must be the same on the cluster (shared storage)
        from ray.job_submission import JobStatus, JobSubmissionClient

        argv = ["train-sequence", "--data", str(data), "--format", "recbole", "--vectors", str(data / "vectors.npy"),
                "--out", str(candidate), "--storage", str(out / "ray"), "--name", f"retrain-{out.name}",
                "--ids" if with_ids else "--no-ids", *(["--init", str(serving)] if serving else []),
                *[x for kv in args.set or [] for x in ("--set", kv)]]
        client = JobSubmissionClient(args.submit)
        job = client.submit_job(entrypoint=shlex.join(["ecrec", *argv]),
                                runtime_env={"working_dir": str(Path.cwd())})
        while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            time.sleep(5)
        if status != JobStatus.SUCCEEDED:
            raise SystemExit(f"training job {job} {status}:\n{client.get_job_logs(job)[-3000:]}")
    else:
        from training.cli import _settings
        from training.sequence import train_and_save

        train_and_save(data, candidate, fmt="recbole", vectors=data / "vectors.npy", ids=with_ids, init=serving,
                       settings=_settings(args.set), storage=out / "ray", name=f"retrain-{out.name}",
                       home=Path(args.home))

    step("score the serving and the candidate model on each shopper's last item")
    test = load_dataset(data, "recbole").test
    holdout = {"candidate": {"last_item": sequence_holdout(load_sequence_model(candidate)[0], X, ids, test)}}
    if serving:
        holdout["serving"] = {"last_item": sequence_holdout(load_sequence_model(serving)[0], X, ids, test)}
        ok, why = should_promote(holdout["candidate"], holdout["serving"], metrics=("ndcg10", "recall10"),
                                 tolerance=args.tolerance)
    else:
        ok, why = True, "no sequence model serves: nothing to be worse than"
    decision.update(candidate_model=str(candidate), holdout=holdout, promoted=ok, why=why)
    step(f"{'promote' if ok else 'keep the serving model'}: {why}")
    if ok:
        models = Path(args.home) / "sequence"
        models.mkdir(parents=True, exist_ok=True)
        promoted = models / f"sequence-{out.name}.safetensors"
        shutil.copyfile(candidate, promoted)
        decision["version"] = promoted.stem
        app_args["sequence_model"] = str(promoted)  # new args: new ingress replicas start before old ones stop
        _roll_out(args, serve_cfg, out, decision)
    _record(out, decision)


def _roll_out(args, serve_cfg: dict, out: Path, decision: dict) -> None:
    """Write the promoted serve config next to the run, and ``serve deploy`` it with ``--deploy``."""
    new_cfg = out / "serve_config.yaml"
    new_cfg.write_text(yaml.safe_dump(serve_cfg, sort_keys=False, allow_unicode=True))
    decision["serve_config"] = str(new_cfg)
    if args.deploy:
        env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"))
        subprocess.run(["serve", "deploy", str(new_cfg), "--address", args.serve_address], check=True, env=env)
        decision["deployed"] = True


def _record(out: Path, decision: dict) -> None:
    (out / "decision.json").write_text(json.dumps(decision, indent=2, ensure_ascii=False, default=float))
    print(json.dumps(decision, indent=2, ensure_ascii=False, default=float))


def _steps(task: str):
    """Prints ``[i/4] what`` as each step starts, with the seconds the last one took."""
    state = {"i": 0, "t": time.perf_counter()}

    def step(what: str) -> None:
        took = f" ({time.perf_counter() - state['t']:.0f} s)" if state["i"] else ""
        state["i"] += 1
        state["t"] = time.perf_counter()
        print(f"retrain {task}{took} [{state['i']}/4] {what}", flush=True)

    return step


def register(sub) -> None:
    p = sub.add_parser("retrain", help="fine-tune on new labelled data, promote only if not worse, roll out")
    p.add_argument("task", choices=["sentiment", "intent", "sequence"])
    p.add_argument("--labelled", type=Path, default=None,
                   help="intent: JSONL of {text, label} utterances the help desk labelled (one of the 27 intents or none)")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="the serving state_dir (SQLite shards; default: the serve config's)")
    p.add_argument("--store", default="sqlite", help="sqlite (read --state-dir) or redis://host:port/db")
    p.add_argument("--namespace", default="ecrec", help="the app's namespace (Redis key prefix)")
    p.add_argument("--since-days", type=float, default=None, help="sentiment: only reviews this recent (default: all kept)")
    p.add_argument("--config", type=Path, default=None, help="default training/configs/cpu.yaml (cpu-intent.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a training setting (sequence: lr=1e-3, epochs=20, ...)")
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--holdout", type=int, default=500, help="texts per test set for the comparison")
    p.add_argument("--max-id-items", type=int, default=200_000,
                   help="sequence: learn id rows only for catalogs up to this size (text only above it)")
    p.add_argument("--min-users", type=int, default=50,
                   help="sequence: refuse to train on fewer shoppers with 3 or more clicks")
    p.add_argument("--tolerance", type=float, default=0.0, help="how much worse still counts as not worse")
    p.add_argument("--from-scratch", action="store_true",
                   help="sentiment/intent: start from the trunk's layers, not the serving head (the default "
                        "when the serving head has the config's branch_layers)")
    p.add_argument("--serve-config", type=Path, default=Path("deployments/serve_config.yaml"))
    p.add_argument("--deploy", action="store_true", help="serve deploy the promoted config")
    p.add_argument("--serve-address", default="http://127.0.0.1:8265", help="Ray dashboard for serve deploy")
    p.add_argument("--submit", default=None, help="train as a Ray Job on this Ray dashboard address")
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(fn=_retrain)
