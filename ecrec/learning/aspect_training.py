"""Fitting the aspect branch (Ray-free; ``ecrec train aspects`` runs it in Ray Train workers or,
with ``--local``, in one process through the same session interface as the sentiment loop).

One example per sentence: the tagger learns BIO over its tokens (sentences whose term set is
complete), and the polarity head every gold span of it, from the same branch pass. Binary files
(Chinese camera / car / phone) rule neutral out of their loss. The frozen trunk's states are
cached after epoch 1 (``TrunkCache``), so later epochs run only the K branch layers. Each epoch
scores every file's dev split; the best epoch (mean polarity accuracy + mean extraction F1 over
files) is what ``export`` saves.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ecrec.learning.aspect_data import Sentence, aspect_splits, spans_to_tags
from ecrec.learning.finetune_data import FinetuneConfig, binary_masked


def load_base(model: str, home: str | None):
    from transformers import AutoModel, AutoTokenizer

    from ecrec.text.encoder import EncoderConfig, resolve_model_dir

    path = resolve_model_dir(EncoderConfig(model=model), Path(home) if home else None)
    tok = AutoTokenizer.from_pretrained(str(path))
    base = AutoModel.from_pretrained(str(path), dtype=torch.float32, add_pooling_layer=False).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    return tok, base


class AspectLoss(nn.Module):
    """The branch and its training loss on cached trunk states (what DDP wraps)."""

    def __init__(self, branch):
        super().__init__()
        self.branch = branch

    def forward(self, h, mask4, mask, tags, rows, span_mask, labels, binary):
        states = self.branch.states(h, mask4)
        tag_logits = self.branch.tag_logits(states)
        if (tags >= 0).any():
            loss = nn.functional.cross_entropy(tag_logits.reshape(-1, tag_logits.shape[-1]).float(), tags.reshape(-1),
                                               ignore_index=-100)
        else:  # no complete term set in the batch: keep the tagger in the graph (DDP) at no loss
            loss = tag_logits.sum() * 0.0
        if rows is not None:
            logits = binary_masked(self.branch.span_logits(states, mask, rows, span_mask).float(), binary)
            loss = loss + nn.functional.cross_entropy(logits, labels)
        return loss


class Examples:
    """Tokenized sentences: ids, per-token BIO (or -100 where the term set is incomplete), and
    each span's tokens, label and whether its label is binary."""

    def __init__(self, tokenizer, sentences: list[Sentence], max_length: int):
        from ecrec.text.aspects import encode_texts, span_tokens

        self.encoded = encode_texts(tokenizer, [s.text for s in sentences], max_length)
        self.pad = tokenizer.pad_token_id or 0
        self.tags, self.spans = [], []
        for s, e in zip(sentences, self.encoded):
            tags = spans_to_tags(e.ranges, s.spans) if s.complete else [-100] * len(e.ids)
            self.tags.append([t if r is not None or t == -100 else -100 for t, r in zip(tags, e.ranges)])
            self.spans.append([(toks, label, s.binary) for a, b, label in s.spans
                               if (toks := span_tokens(e.ranges, a, b))])

    def lengths(self) -> list[int]:
        return [len(e.ids) for e in self.encoded]

    def batch(self, index: list[int]):
        from ecrec.text.aspects import pad_batch

        ids, mask = pad_batch([self.encoded[i] for i in index], self.pad)
        tags = torch.full(ids.shape, -100, dtype=torch.long)
        rows, masks, labels, binary = [], [], [], []
        for r, i in enumerate(index):
            tags[r, : len(self.tags[i])] = torch.tensor(self.tags[i])
            for toks, label, is_binary in self.spans[i]:
                m = torch.zeros(ids.shape[1])
                m[toks] = 1
                rows.append(r), masks.append(m), labels.append(label), binary.append(is_binary)
        if not rows:
            return ids, mask, tags, None, None, None, None
        return (ids, mask, tags, torch.tensor(rows), torch.stack(masks), torch.tensor(labels),
                torch.tensor(binary))


def train_loop(config: dict, session) -> None:
    """Fit the aspect branch; ``session`` is a Ray Train worker's or ``LocalSession``."""
    from transformers import get_linear_schedule_with_warmup

    from ecrec.evaluation.aspect_eval import evaluate_files
    from ecrec.learning.batching import LengthBuckets, TrunkCache
    from ecrec.text.aspects import new_branch

    cfg = FinetuneConfig(**config["cfg"])
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads_per_worker)
    torch.set_flush_denormal(True)
    train, dev = aspect_splits(cfg.data_dir, cfg.dev_frac, cfg.seed, train_limit=cfg.train_limit,
                               bdci_limit=cfg.bdci_limit)
    tok, base = load_base(cfg.model, config.get("home"))
    branch = new_branch(base, cfg.branch_layers, cfg.dropout)
    split = base.config.num_hidden_layers - cfg.branch_layers
    model = session.prepare_model(AspectLoss(branch))
    inner = model.module if hasattr(model, "module") else model
    base.to(session.device)
    ex = Examples(tok, train, cfg.max_length)
    sampler = LengthBuckets(ex.lengths(), cfg.batch_size, session.rank, session.world, cfg.seed)
    cache = TrunkCache(base, split) if cfg.cache_trunk else None
    heads = [p for n, p in inner.branch.named_parameters() if not n.startswith("layers.")]
    opt = torch.optim.AdamW([{"params": inner.branch.layers.parameters(), "lr": cfg.lr},
                             {"params": heads, "lr": cfg.head_lr}], weight_decay=cfg.weight_decay)
    total = len(sampler) * cfg.epochs
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    start, step, best, best_state, best_report, curve = 0, 0, -1.0, None, None, []
    with session.checkpoint() as d:
        if d is not None:  # resume
            state = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=True)
            inner.branch.load_state_dict(state["branch"])
            opt.load_state_dict(state["optimizer"]), sched.load_state_dict(state["scheduler"])
            start, step, best, curve = state["epoch"] + 1, state["step"], state["best"], state["curve"]
            best_state = torch.load(Path(d) / "best_branch.pt", map_location="cpu", weights_only=True)
            best_report = json.loads((Path(d) / "best_report.json").read_text())
    device = session.device
    for epoch in range(start, cfg.epochs):
        sampler.set_epoch(epoch)
        model.train()
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        for index in sampler:
            ids, mask, tags, rows, span_mask, labels, binary = ex.batch(index)
            ids, mask, tags = ids.to(device), mask.to(device), tags.to(device)
            if cache is not None:
                h, mask4 = cache.batch(index, ids, mask)
            else:
                from ecrec.text.classifier import trunk_forward

                with torch.no_grad():
                    h, mask4 = trunk_forward(base, ids, mask, split)
            to = (lambda t: t.to(device) if t is not None else None)  # noqa: E731
            loss = model(h, mask4, mask, tags, to(rows), to(span_mask), to(labels), to(binary))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(inner.branch.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step, seen, loss_sum = step + 1, seen + len(index), loss_sum + float(loss.detach()) * len(index)
            if session.rank == 0 and step % 20 == 0:
                curve.append({"step": step, "train_loss": loss_sum / seen})
        train_s = time.perf_counter() - t0
        inner.branch.eval()
        report = evaluate_files(base, tok, inner.branch, dev, cfg.max_length, device)
        if report["score"] > best:
            best, best_report = report["score"], report
            best_state = {k: v.detach().cpu().clone() for k, v in inner.branch.state_dict().items()}
        curve.append({"step": step, "epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                      "dev_score": report["score"], "dev_polarity_accuracy": report["mean_polarity_accuracy"],
                      "dev_extraction_f1": report["mean_extraction_f1"], "train_s": train_s})
        metrics = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(seen, 1), "train_s": train_s,
                   "dev_score": report["score"], "best_dev_score": best}
        with tempfile.TemporaryDirectory() as d:
            directory = None
            if session.rank == 0:
                torch.save({"branch": inner.branch.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "epoch": epoch, "step": step, "best": float(best),
                            "curve": curve}, Path(d) / "state.pt")
                torch.save(best_state, Path(d) / "best_branch.pt")
                (Path(d) / "best_report.json").write_text(json.dumps(best_report, ensure_ascii=False, default=float))
                directory = Path(d)
            session.report(metrics, directory)


def export(cfg: FinetuneConfig, checkpoint: Path, out_dir: Path, wall_s: float, home: str | None) -> dict:
    """The checkpoint's best branch -> ``out_dir/branch.safetensors`` + ``metrics.json`` (its dev
    report per file, the training curve and time)."""
    from ecrec.text.aspects import new_branch, save_aspect_branch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
    best = torch.load(checkpoint / "best_branch.pt", map_location="cpu", weights_only=True)
    report = json.loads((checkpoint / "best_report.json").read_text())
    _, base = load_base(cfg.model, home)
    branch = new_branch(base, cfg.branch_layers, cfg.dropout)
    branch.load_state_dict(best)
    dev = {name: {"polarity": r["polarity"], **({"extraction": r["extraction"]} if "extraction" in r else {})}
           for name, r in report["files"].items()}
    info = {"name": f"aspects-ft-k{cfg.branch_layers}", "base": cfg.model, "task": "aspects",
            "max_length": cfg.max_length, "dev": dev}
    save_aspect_branch(branch, out_dir / "branch.safetensors", info)
    metrics = {"task": "aspects", "config": cfg.to_dict(), "epochs_run": state["epoch"] + 1, "steps": state["step"],
               "fit_wall_s": wall_s, "dev": report, "curve": state["curve"]}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False, default=float))
    return metrics


def summary_table(report: dict) -> str:
    """Markdown rows: file, polarity accuracy / macro-F1 (n), extraction F1."""
    lines = ["| file | polarity accuracy | polarity macro-F1 | aspect rows | extraction F1 (P / R) | pos-vs-neg only |",
             "|---|---|---|---|---|---|"]
    for name, r in report["files"].items():
        p, e = r["polarity"], r.get("extraction")
        ext = f"{e['f1']:.3f} ({e['precision']:.3f} / {e['recall']:.3f})" if e else "n/a (no term sets)"
        two = f"{p['two_way_accuracy']:.3f}" if "two_way_accuracy" in p else ""
        lines.append(f"| {name} | {p['accuracy']:.3f} | {p['macro_f1']:.3f} | {p['n']} | {ext} | {two} |")
    return "\n".join(lines)


def dev_splits(data_dir: str, cfg: FinetuneConfig) -> dict[str, list[Sentence]]:
    """The dev split of every file, exactly as training held it out."""
    return aspect_splits(data_dir, cfg.dev_frac, cfg.seed, bdci_limit=cfg.bdci_limit)[1]

