"""Ray Train fine-tuning of the sentiment / intent branch (``ecrec train sentiment|intent``).

``TorchTrainer`` runs ``train_loop_per_worker`` on N workers (DDP: gloo on CPU, NCCL on GPU).
Each epoch every worker evaluates the whole dev split (identical numbers, so every rank takes the
same early-stopping decision) and rank 0 reports a checkpoint. Re-running the same run name and
storage path resumes from the latest checkpoint. The model, data and metrics live in ``ecrec/``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ecrec.learning.finetune_data import FinetuneConfig

log = logging.getLogger(__name__)



def load_state(path) -> dict:
    """A checkpoint file, unpickled safely: tensors and plain containers only (``weights_only``),
    so a tampered checkpoint cannot run code."""
    return torch.load(path, map_location="cpu", weights_only=True)

def _base_model(cfg: FinetuneConfig, home: str | None):
    from transformers import AutoModel, AutoTokenizer

    from ecrec.text.encoder import EncoderConfig, resolve_model_dir

    path = resolve_model_dir(EncoderConfig(model=cfg.model), Path(home) if home else None)
    tok = AutoTokenizer.from_pretrained(str(path))
    base = AutoModel.from_pretrained(str(path), dtype=torch.float32, add_pooling_layer=False)
    return tok, base


def _prefix(cfg: FinetuneConfig, texts: list[str]) -> list[str]:
    from ecrec.text.prepare import clean

    pre = "query: " if cfg.model == "e5-small" else ""
    return [pre + clean(t).text for t in texts]


def _loader(tok, texts, labels, binary, cfg, rank: int, world: int):
    """Length-bucketed batches of this rank's fixed share: (index, ids, mask, label, binary)."""
    from ecrec.learning.batching import LengthBuckets

    enc = tok(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    ys = labels.tolist()
    binary = np.zeros(len(enc), dtype=bool) if binary is None else binary
    pad = tok.pad_token_id

    def collate(index):
        n = max(len(enc[i]) for i in index)
        ids = torch.full((len(index), n), pad, dtype=torch.long)
        mask = torch.zeros((len(index), n), dtype=torch.long)
        for row, i in enumerate(index):
            ids[row, : len(enc[i])] = torch.tensor(enc[i])
            mask[row, : len(enc[i])] = 1
        return (torch.tensor(index), ids, mask, torch.tensor([ys[i] for i in index]),
                torch.from_numpy(binary[index]))

    sampler = LengthBuckets([len(e) for e in enc], cfg.batch_size, rank, world, cfg.seed)
    return torch.utils.data.DataLoader(range(len(enc)), batch_sampler=sampler, collate_fn=collate)


@torch.no_grad()
def predict_logits(model, tok, texts: list[str], cfg: FinetuneConfig, device="cpu") -> np.ndarray:
    """Class logits for ``texts`` (length-sorted batches)."""
    model.eval()
    pre = _prefix(cfg, texts)
    order = np.argsort([-len(t) for t in pre], kind="stable")
    out = None
    for s in range(0, len(order), 64):
        idx = order[s : s + 64]
        enc = tok([pre[i] for i in idx], padding=True, truncation=True, max_length=cfg.max_length,
                  return_tensors="pt").to(device)
        logits = model(enc["input_ids"], enc["attention_mask"]).float().cpu().numpy()
        out = np.empty((len(pre), logits.shape[1]), dtype=np.float32) if out is None else out
        out[idx] = logits
    return out


def predict(model, tok, texts: list[str], cfg: FinetuneConfig, device="cpu") -> np.ndarray:
    """Class ids for ``texts``."""
    return predict_logits(model, tok, texts, cfg, device).argmax(1)


def shared_logits(model, tok, texts: list[str], cfg: FinetuneConfig, session) -> np.ndarray:
    """``predict_logits`` for every text on every rank, each rank scoring only its share
    (rows ``rank::world``) and the shares exchanged: the dev split costs 1/world of a pass per worker
    instead of a whole pass on each (every rank still gets the same numbers, so all of them take
    the same early-stopping decision)."""
    if not texts:  # every rank would gather nothing: no logits to build an epoch's judgement on
        raise ValueError("nothing to score: the split is empty")
    if session.world == 1:
        return predict_logits(model, tok, texts, cfg, session.device)
    rows = np.arange(session.rank, len(texts), session.world)
    mine = predict_logits(model, tok, [texts[i] for i in rows], cfg, session.device) if len(rows) else None
    out = None
    for rank, part in enumerate(session.gather(mine)):
        if part is None:
            continue
        out = np.empty((len(texts), part.shape[1]), dtype=np.float32) if out is None else out
        out[rank::session.world] = part
    return out


def _binary_dev(model, tok, data, cfg: FinetuneConfig, session=None, device="cpu") -> dict:
    """``calibrate_bias`` keywords for the binary dev rows (sentiment), or none."""
    if data.binary_dev is None:
        return {}
    logits = (shared_logits(model, tok, data.binary_dev.texts, cfg, session) if session is not None
              else predict_logits(model, tok, data.binary_dev.texts, cfg, device))
    return {"binary_logits": logits, "binary_y": data.binary_dev.labels}


class RaySession:
    """What the loop needs from Ray Train, on a ``TorchTrainer`` worker: rank, device, DDP wrapping,
    the checkpoint to resume from and ``report``. ``training/local.py`` is the one-process twin."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        self._train, self._torch = ray.train, ray.train.torch
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare_model(self, model):
        return self._torch.prepare_model(model)

    def prepare_loader(self, loader):
        # each rank keeps a fixed share of the examples (its trunk cache): no distributed sampler
        return self._torch.prepare_data_loader(loader, add_dist_sampler=False)

    @contextlib.contextmanager
    def checkpoint(self):
        ckpt = self._train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield Path(d)

    def report(self, metrics: dict, directory: Path | None) -> None:
        ckpt = self._train.Checkpoint.from_directory(str(directory)) if directory is not None else None
        self._train.report(metrics, checkpoint=ckpt)

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (``torch.distributed.all_gather_object``)."""
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def progress_bar(self, total: int, desc: str):
        """Rank 0's progress over one epoch's steps, drawn by the driver (``tqdm_ray``)."""
        from ray.experimental.tqdm_ray import tqdm

        return tqdm(total=total, desc=desc)


def start_branch(cfg: FinetuneConfig, base, labels: list[str]) -> dict:
    """The weights of ``cfg.init_branch``, refused unless it has the task's labels and as many layers."""
    from ecrec.text.classifier import load_branch

    branch, meta = load_branch(cfg.init_branch, base)
    if list(meta["labels"]) != list(labels) or meta["branch_layers"] != cfg.branch_layers:
        raise ValueError(f"init_branch {cfg.init_branch}: labels {meta['labels']} / K={meta['branch_layers']} "
                         f"do not match the task's {list(labels)} / K={cfg.branch_layers}")
    return branch.state_dict()


# keys of ``best_branch.pt`` beside the branch's weights (not parameters)
DEV_LOGITS, BINARY_DEV_LOGITS = "__dev_logits__", "__binary_dev_logits__"


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train entry point."""
    train_loop(config, RaySession())


def train_loop(config: dict, session) -> None:
    """Fit the branch: epochs of length-bucketed batches, dev evaluation, a checkpoint per epoch.
    ``session`` is a ``RaySession`` (DDP workers) or ``training.local.LocalSession`` (one process)."""
    from transformers import get_linear_schedule_with_warmup

    from ecrec.text.classifier import BranchClassifier
    from ecrec.learning.batching import TrunkCache
    from ecrec.learning.finetune_data import balanced_weights, binary_masked, calibrate_bias, evaluate, load_task

    cfg = FinetuneConfig(**config["cfg"])
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads_per_worker)
    torch.set_flush_denormal(True)
    rank, world, device = session.rank, session.world, session.device
    data = load_task(cfg)
    tok, base = _base_model(cfg, config.get("home"))
    model = BranchClassifier(base, len(data.labels), cfg.branch_layers, cfg.dropout)
    if cfg.init_branch:  # a retrain continues the serving head (before DDP copies the weights to every rank)
        model.branch.load_state_dict(start_branch(cfg, base, data.labels))
    model = session.prepare_model(model)
    inner = model.module if hasattr(model, "module") else model
    loader = session.prepare_loader(
        _loader(tok, _prefix(cfg, data.train.texts), data.train.labels, data.train.binary, cfg, rank, world))
    cache = TrunkCache(inner.base, inner.split) if cfg.cache_trunk else None
    weight = None
    if cfg.class_weights == "balanced":
        weight = torch.tensor(balanced_weights(data.train.labels, len(data.labels)), device=device)
    elif cfg.class_weights is not None:
        raise ValueError(f"class_weights must be null or 'balanced', got {cfg.class_weights!r}")
    steps_per_epoch = len(loader)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW([
        {"params": inner.branch.layers.parameters(), "lr": cfg.lr},
        {"params": inner.branch.head.parameters(), "lr": cfg.head_lr},
    ], weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    start_epoch, step, best_f1, bad, best_state, rates, curve = 0, 0, -1.0, 0, None, [], []
    with session.checkpoint() as d:
        if d is not None:
            state = load_state(d / "state.pt")
            best_state = load_state(d / "best_branch.pt")
            inner.branch.load_state_dict(state["branch"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start_epoch, step, best_f1, bad = state["epoch"] + 1, state["step"], state["best_f1"], state["bad"]
            rates, curve = state.get("rates", []), state.get("curve", [])
    use_amp = device.type == "cuda"
    for epoch in range(start_epoch, cfg.epochs):
        loader.batch_sampler.set_epoch(epoch)
        model.train()
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = session.progress_bar(steps_per_epoch, f"{cfg.task} epoch {epoch + 1}/{cfg.epochs}") \
            if rank == 0 and config.get("progress") else None
        for index, ids, mask, y, binary in loader:
            ids, mask, y, binary = (t.to(device, non_blocking=True) for t in (ids, mask, y, binary))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                if cache is not None:
                    h, mask4 = cache.batch(index.tolist(), ids, mask)
                    logits = model(ids, mask, trunk=(h, mask4))
                else:
                    logits = model(ids, mask)
                logits = binary_masked(logits.float(), binary)
                loss = torch.nn.functional.cross_entropy(logits, y, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(inner.branch.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            if bar is not None:
                bar.update(1)
            if rank == 0 and step % 10 == 0:  # the training curve: running mean loss of this epoch
                curve.append({"step": step, "train_loss": loss_sum / seen})
        if bar is not None:
            bar.close()
        train_time = time.perf_counter() - t0
        dev_logits = shared_logits(inner, tok, data.dev.texts, cfg, session)
        dev = evaluate(dev_logits.argmax(1), data.dev.labels, data.labels)
        binary = {}
        if cfg.calibrate:  # judge the epoch as it will be served: with its dev-tuned class offsets
            binary = _binary_dev(inner, tok, data, cfg, session)
            offsets, _ = calibrate_bias(dev_logits, data.dev.labels, len(data.labels), **binary)
            dev = evaluate((dev_logits + offsets).argmax(1), data.dev.labels, data.labels)
        improved = dev["macro_f1"] > best_f1
        best_f1, bad = (dev["macro_f1"], 0) if improved else (best_f1, bad + 1)
        if improved:
            best_state = {k: v.detach().cpu().clone() for k, v in inner.branch.state_dict().items()}
            # the best branch's dev logits travel with it: export calibrates and reports without a pass
            best_state[DEV_LOGITS] = torch.from_numpy(dev_logits)
            if binary:
                best_state[BINARY_DEV_LOGITS] = torch.from_numpy(binary["binary_logits"])
        rates.append(seen * world / train_time)
        curve.append({"step": step, "epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                      "dev_macro_f1": dev["macro_f1"], "dev_accuracy": dev["accuracy"]})
        metrics = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(seen, 1),
                   "samples_per_s": rates[-1], "epoch_samples_per_s": list(rates), "dev_accuracy": dev["accuracy"],
                   "dev_macro_f1": dev["macro_f1"], "best_dev_macro_f1": best_f1}
        stop = bad > cfg.patience - 1 if cfg.patience > 0 else False
        with tempfile.TemporaryDirectory() as d:
            directory = None
            if rank == 0:
                torch.save({"branch": inner.branch.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "epoch": epoch, "step": step,
                            "best_f1": float(best_f1), "bad": int(bad), "labels": list(data.labels),
                            "rates": [float(r) for r in rates], "curve": curve,
                            "config": cfg.to_dict()}, Path(d) / "state.pt")
                torch.save(best_state, Path(d) / "best_branch.pt")
                directory = Path(d)
            session.report(metrics, directory)
        if stop:
            break


def _show_progress() -> bool:
    """Decided on the driver (the workers cannot see its terminal): a bar when stderr is a
    terminal, not in CI logs or tests; ``ECREC_PROGRESS`` (0/1) overrides."""
    import sys

    show = os.environ.get("ECREC_PROGRESS")
    return sys.stderr.isatty() if show is None else show == "1"


def run(cfg: FinetuneConfig, out_dir: str | Path, storage: str | Path, name: str | None = None,
        home: str | None = None):
    """Fit with Ray Train, then export the best branch, reports and metrics to ``out_dir``."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    import dataclasses

    out_dir, storage = Path(out_dir).resolve(), Path(storage).resolve()
    # workers run in their own directories: hand them absolute paths
    cfg = dataclasses.replace(cfg, data_dir=str(Path(cfg.data_dir).resolve()))
    name = name or f"{cfg.task}-{cfg.model}"
    from training.cluster import connect

    cpus = cfg.cpus_per_worker or cfg.threads_per_worker
    connect(max(2, cfg.workers * cfg.threads_per_worker), 512 * 1024**2, cfg.workers, cpus, cfg.use_gpu)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict(), "home": home or os.environ.get("ECREC_HOME"),
                           "progress": _show_progress()},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    with result.checkpoint.as_directory() as d:
        return export(cfg, Path(d), result.metrics, out_dir, wall, home)


def export(cfg: FinetuneConfig, checkpoint: Path, last_metrics: dict, out_dir: Path, wall_s: float,
           home: str | None, device="cpu") -> dict:
    """Best branch of the checkpoint folder -> ``branch.safetensors`` (shippable) + an HF folder +
    metrics and reports; the test sets are scored on ``device``."""
    from ecrec.text.classifier import BranchClassifier, export_hf_folder, save_branch
    from ecrec.learning.finetune_data import (calibrate_bias, classification_report, evaluate, evaluate_binary, load_task,
                                     plot_confusion, plot_training_curve)

    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(checkpoint / "state.pt")
    best = load_state(checkpoint / "best_branch.pt")
    saved_dev, saved_binary = best.pop(DEV_LOGITS, None), best.pop(BINARY_DEV_LOGITS, None)
    data = load_task(cfg)
    tok, base = _base_model(cfg, home)
    model = BranchClassifier(base, len(data.labels), cfg.branch_layers, cfg.dropout)
    model.branch.load_state_dict(best)
    model.to(device).eval()
    metrics = {"task": cfg.task, "config": cfg.to_dict(), "epochs_run": state["epoch"] + 1, "steps": state["step"],
               "fit_wall_s": wall_s, "last_epoch": last_metrics, "curve": state.get("curve", [])}
    if metrics["curve"]:
        plot_training_curve(metrics["curve"], out_dir / "training_curve.png", f"{cfg.task} / {cfg.model} "
                            f"K={cfg.branch_layers}, {cfg.workers} worker(s)")
    # the loop scored the best branch on dev already (same data: load_task is deterministic)
    reuse = saved_dev is not None and len(saved_dev) == len(data.dev.texts)
    dev_logits = saved_dev.numpy() if reuse else predict_logits(model, tok, data.dev.texts, cfg, device)
    if cfg.calibrate:  # per-class logit offsets tuned on dev, folded into the head (serving unchanged)
        metrics["dev_uncalibrated"] = evaluate(dev_logits.argmax(1), data.dev.labels, data.labels)
        binary = ({"binary_logits": saved_binary.numpy(), "binary_y": data.binary_dev.labels}
                  if reuse and saved_binary is not None and data.binary_dev is not None
                  and len(saved_binary) == len(data.binary_dev.texts)
                  else _binary_dev(model, tok, data, cfg, device=device))
        offsets, _ = calibrate_bias(dev_logits, data.dev.labels, len(data.labels), **binary)
        with torch.no_grad():
            model.branch.head.bias += torch.from_numpy(offsets).to(model.branch.head.bias)
        dev_logits = dev_logits + offsets  # what the folded head now gives, without a second pass
        metrics["calibration_offsets"] = dict(zip(data.labels, offsets.tolist()))
    sets = {"dev": data.dev, **data.tests}
    report_lines, all_logits = [], {}
    for set_name, split in sets.items():
        logits = dev_logits if set_name == "dev" else predict_logits(model, tok, split.texts, cfg, device)
        all_logits[set_name] = logits
        pred = logits.argmax(1)
        metrics[set_name] = evaluate(pred, split.labels, data.labels)
        if split.binary is not None and split.binary.all():
            metrics[set_name].update(evaluate_binary(logits, split.labels))
        report_lines += [f"== {set_name}", classification_report(pred, split.labels, data.labels), ""]
        if set_name != "dev":
            plot_confusion(pred, split.labels, data.labels, out_dir / f"confusion_{set_name}.png",
                           f"{cfg.task} / {set_name}: accuracy {metrics[set_name]['accuracy']:.3f}")
    if len(sets) == 1:
        plot_confusion(pred, split.labels, data.labels, out_dir / "confusion_dev.png", f"{cfg.task} / dev")
    (out_dir / "classification_report.txt").write_text("\n".join(report_lines))
    info = {"name": f"{cfg.task}-ft-k{cfg.branch_layers}", "base": cfg.model, "task": cfg.task,
            "dev": metrics["dev"], **{k: metrics[k] for k in data.tests}}
    if cfg.task == "intent":
        from ecrec.evaluation.intent_metrics import confidence_report

        metrics["confidence"] = confidence_report(all_logits, {k: v.labels for k, v in sets.items()}, data.labels,
                                                  fit_rows=data.clarify_rows)
        info["clarify_below"] = metrics["confidence"]["clarify_below"]
    model.to("cpu")
    save_branch(model.branch, out_dir / "branch.safetensors", data.labels, info)
    export_hf_folder(model, tok, data.labels, out_dir / "model")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    return metrics
