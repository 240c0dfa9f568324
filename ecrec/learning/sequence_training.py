"""Training the sequence retriever: next-item prediction with a full softmax over the catalog.

Ray-free: ``train_sequence`` is the loop every worker runs; the Ray Train driver runs it
under Ray Train (DDP), and ``ecrec eval`` runs it in-process when Ray is absent. Every rank
evaluates the whole valid split (so all ranks take the same early-stopping decision) and the
best epoch's weights by valid NDCG@10 are kept.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ecrec.evaluation.data import Split
from ecrec.retrieval.sequence import SequenceConfig, SequenceModel, right_pad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SequenceTrainConfig:
    model: SequenceConfig = field(default_factory=SequenceConfig)
    epochs: int = field(default=40, metadata={"help": "upper bound; early stopping usually ends sooner"})
    batch_size: int = 128
    lr: float = 3e-4
    warmup_epochs: float = 2.0
    item_map_lr_ratio: float = field(default=0.02, metadata={"help": "learning-rate share of the item map"})
    weight_decay: float = 0.05
    patience: int = field(default=4, metadata={"help": "epochs without a valid NDCG@10 gain"})
    time_cap_s: float = field(default=900.0, metadata={"help": "stop after this many seconds"})
    seed: int = 0
    workers: int = field(default=2, metadata={"help": "Ray Train workers"})
    threads: int = field(default=1, metadata={"help": "torch threads per worker"})
    include_valid: bool = field(default=False, metadata={
        "help": "also train on the valid targets, for a fixed number of epochs (the final test-time model)"})
    cpus_per_worker: float | None = field(default=None, metadata={"help": "Ray CPUs reserved per worker (default: threads)"})
    init_path: str | None = field(default=None, metadata={
        "help": "a torch state dict to start from (``ecrec.retrieval.sequence.warm_state``: fine-tune the serving model)"})


def _batches(seqs: list[list[int]], size: int, rank: int, world: int, rng: np.random.Generator):
    """Length-sorted buckets (little padding), shuffled; rank r takes every world-th batch."""
    order = np.argsort([len(s) + rng.random() for s in seqs], kind="stable")
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    n = len(chunks) - len(chunks) % world  # equal step counts per rank (DDP needs it)
    picked = [chunks[j] for j in rng.permutation(len(chunks))[:n]]
    return picked[rank::world]


def exclude_history(scores: np.ndarray, histories: list[list[int]]) -> np.ndarray:
    """The protocol allows ranking without the user's own history items: set them to -inf."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if histories else []
    scores[rows, cols] = -np.inf
    return scores


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(n, k) column indices of the largest scores, best first (ties: lower index first)."""
    k = min(k, scores.shape[1])
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # (n, 1) the k-th largest score
    # argpartition alone keeps an arbitrary subset of the items tied at the k-th score: take
    # every item above it, then the lowest-indexed of those tied with it
    above, tied = scores > kth, scores == kth
    pick = above | (tied & (np.cumsum(tied, 1) <= k - above.sum(1, keepdims=True)))
    part = np.nonzero(pick)[1].reshape(-1, k)
    vals = np.take_along_axis(scores, part, 1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, 1)


def top_k_listed(scores: np.ndarray, k: int) -> np.ndarray:
    """(n, k) item indices, best first; -1 for an excluded item (score -inf) and past the end of a
    catalog smaller than k, so the lists are always k long and never list history."""
    out = np.full((len(scores), k), -1, dtype=np.int64)
    top = top_k(scores, k)
    top[np.isneginf(np.take_along_axis(scores, top, 1))] = -1
    out[:, : top.shape[1]] = top
    return out


def mask_history(logits: torch.Tensor, inputs: torch.Tensor, live: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
    """Train as we rank: step t never scores the items read up to t (they are excluded at
    evaluation and in serving; left in, the softmax learns to move away from the very items
    the query is built from). A target that repeats a history item keeps its logit."""
    b, L = inputs.shape
    rows = torch.arange(b)[:, None].expand(b, L)[live]  # (steps,)
    t = torch.arange(L)[None].expand(b, L)[live]
    hist = inputs[rows]  # (steps, L)
    hist = torch.where(torch.arange(L)[None] <= t[:, None], hist, torch.full_like(hist, logits.shape[1]))
    keep = logits.gather(1, target[:, None])
    out = torch.cat([logits, logits.new_zeros(len(logits), 1)], 1).scatter(1, hist, float("-inf"))[:, :-1]
    return out.scatter(1, target[:, None], keep)


def evaluate_ndcg10(model: SequenceModel, X: np.ndarray, split: Split) -> float:
    from ecrec.evaluation.metrics import ranking_report

    model.eval()
    top = top_k_listed(exclude_history(model.scores(X, split.histories), split.histories), 10)
    return ranking_report(top, split.targets, ks=(10,))["N@10"]


def train_sequence(X: np.ndarray, seqs: list[list[int]], valid: Split, cfg: SequenceTrainConfig,
                   rank: int = 0, world: int = 1, wrap: Callable = lambda m: m,
                   report: Callable[[dict, dict | None], None] | None = None,
                   start: dict | None = None) -> tuple[SequenceModel, dict]:
    """Train on ``seqs`` (item indices into ``X``); returns the best model and its history.

    ``wrap`` turns the model into its distributed form (Ray Train's ``prepare_model``);
    ``report(metrics, state)`` is called every epoch (state: the best weights so far, or None);
    ``start`` resumes from such a state; otherwise ``cfg.init_path``, when set, gives the first weights.
    """
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    base = SequenceModel(cfg.model)
    best = {"ndcg10": -1.0, "epoch": -1, "weights": None}
    first = 0
    if cfg.init_path and not start:
        base.load_state_dict(torch.load(cfg.init_path, map_location="cpu", weights_only=True))
    if start:
        base.load_state_dict(start["weights"])
        best = {"ndcg10": start["ndcg10"], "epoch": start["epoch"], "weights": start["weights"]}
        first = start["epoch"] + 1
    model = wrap(base)
    # the item map starts as the identity on 384 dims: full-rate Adam steps would scramble it
    slow = [p for n, p in model.named_parameters() if "item_map" in n]
    rest = [p for n, p in model.named_parameters() if "item_map" not in n]
    opt = torch.optim.AdamW([{"params": rest}, {"params": slow, "lr": cfg.lr * cfg.item_map_lr_ratio,
                                                 "weight_decay": 0.0}], lr=cfg.lr, weight_decay=cfg.weight_decay)
    # linear warm-up: Adam's first steps are full-size, and the correction starts from zero
    steps_per_epoch = max(1, len(seqs) // (cfg.batch_size * world))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1 + first * steps_per_epoch) / (cfg.warmup_epochs * steps_per_epoch)))
    Xt = torch.from_numpy(np.asarray(X, np.float32))
    history, t0 = [], time.perf_counter()
    for epoch in range(first, cfg.epochs):
        model.train()
        losses = []
        for chunk in _batches(seqs, cfg.batch_size, rank, world, np.random.default_rng([cfg.seed, epoch])):
            idx, lengths = right_pad([seqs[i][-(cfg.model.max_len + 1):] for i in chunk])
            inputs, targets = idx[:, :-1], idx[:, 1:]
            live = torch.arange(inputs.shape[1])[None] < (lengths - 1)[:, None]  # (b, L) real steps
            q = model(Xt[inputs], inputs if base.ids is not None else None)[live]  # (steps, dim)
            logits = base.scale() * (q @ base.item_matrix(Xt).T)  # (steps, n_items)
            logits = mask_history(logits, inputs, live, targets[live])
            loss = torch.nn.functional.cross_entropy(logits, targets[live])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        ndcg = evaluate_ndcg10(base, X, valid)
        improved = ndcg > best["ndcg10"] or cfg.include_valid  # valid is training data then: keep the last
        if improved:
            best = {"ndcg10": ndcg, "epoch": epoch,
                    "weights": {k: v.detach().clone() for k, v in base.state_dict().items()}}
        elapsed = time.perf_counter() - t0
        row = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
               "valid_ndcg10": ndcg, "best_epoch": best["epoch"], "seconds": elapsed}
        history.append(row)
        log.info("epoch %d loss %.4f valid N@10 %.4f (best %d)", epoch, row["loss"], ndcg, best["epoch"])
        stop = (epoch - best["epoch"] >= cfg.patience and not cfg.include_valid) or elapsed > cfg.time_cap_s
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([float(stop)])
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        if report is not None:
            report(row, best if improved else None)
        if stop:
            break
    base.load_state_dict(best["weights"])
    base.eval()
    return base, {"history": history, "best_epoch": best["epoch"], "valid_ndcg10": best["ndcg10"]}
