"""Datasets, configuration and evaluation for fine-tuning (Ray-free; the Ray Train drivers run them)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml

from ecrec.learning.datasets import (SENTIMENT_LABELS, load_marc, load_online_shopping_categories,
                            stratified_split)
from ecrec.evaluation.metrics import accuracy_macro_f1



@dataclass(frozen=True)
class FinetuneConfig:
    task: str = field(default="sentiment", metadata={
        "help": "sentiment (MARC zh+en), intent (Bitext) or aspects (the shared aspects/ files)"})
    model: str = field(default="e5-small", metadata={"help": "base encoder"})
    branch_layers: int = field(default=3, metadata={"help": "top layers fine-tuned (the rest are shared)"})
    max_length: int = field(default=128, metadata={"help": "tokens per text"})
    batch_size: int = field(default=32, metadata={"help": "per worker"})
    epochs: int = field(default=2, metadata={"help": "maximum epochs"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW peak learning rate (branch)"})
    head_lr: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate (head)"})
    weight_decay: float = 0.01
    warmup_ratio: float = field(default=0.06, metadata={"help": "linear warm-up share of steps"})
    grad_clip: float = 1.0
    dropout: float = 0.1
    patience: int = field(default=1, metadata={"help": "epochs without dev macro-F1 gain before stopping"})
    workers: int = field(default=2, metadata={"help": "Ray Train workers"})
    use_gpu: bool = False
    threads_per_worker: int = 1
    cpus_per_worker: float | None = field(default=None, metadata={"help": "Ray CPUs reserved (default: threads)"})
    seed: int = 0
    train_limit: int | None = field(default=None, metadata={"help": "examples per language/class file (smoke)"})
    dev_frac: float = 0.1
    eval_test: bool = field(default=True, metadata={"help": "evaluate the full test sets after training"})
    extra_zh_binary: int = field(default=0, metadata={
        "help": "online_shopping_10_cats rows added to sentiment training (binary: loss ignores neutral)"})
    zh_heldout_categories: tuple[str, ...] = field(default=("酒店", "水果", "蒙牛"), metadata={
        "help": "online_shopping categories never trained on: the out-of-domain test"})
    zh_binary_dev: int = field(default=1000, metadata={
        "help": "online_shopping rows (trained categories) kept for calibrating neutral"})
    heldout_per_category: int = field(default=1000, metadata={"help": "test rows per held-out category"})
    zh_variants: int = field(default=3, metadata={"help": "augmented variants per Chinese intent utterance"})
    none_marc: int = field(default=1500, metadata={"help": "MARC train reviews per language in intent's 'none' class"})
    init_branch: str | None = field(default=None, metadata={
        "help": "start from this branch (.safetensors, same labels and branch_layers) instead of the trunk's own "
                "top layers: `ecrec retrain` continues the serving head"})
    cache_trunk: bool = field(default=True, metadata={"help": "keep frozen-trunk states after epoch 1"})
    class_weights: str | None = field(default=None, metadata={"help": "None or 'balanced' (inverse frequency)"})
    calibrate: bool = field(default=False, metadata={"help": "tune per-class logit biases on dev"})
    extra_train: str | None = field(default=None, metadata={
        "help": "JSONL of {text, label} added to training: rated reviews `ecrec retrain sentiment` exported, or "
                "the help desk's labelled utterances (`ecrec retrain intent --labelled`)"})
    bdci_limit: int | None = field(default=3000, metadata={"help": "BDCI car posts trained on (aspects)"})
    data_dir: str = "../shared/data"

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "FinetuneConfig":
        raw = yaml.safe_load(Path(path).read_text()) or {}
        raw.update({k: v for k, v in overrides.items() if v is not None})
        if "zh_heldout_categories" in raw:
            raw["zh_heldout_categories"] = tuple(raw["zh_heldout_categories"] or ())
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**raw)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray
    binary: np.ndarray | None = None  # True where the label only says negative vs positive


@dataclass
class TaskData:
    labels: list[str]
    train: Split
    dev: Split
    tests: dict[str, Split]  # name -> held-out evaluation set
    binary_dev: Split | None = None  # binary rows for calibrating neutral (sentiment)
    clarify_rows: np.ndarray | None = None  # dev rows the clarify threshold is fitted on (intent)


def read_labelled(path: str | Path, labels: Sequence[str] = SENTIMENT_LABELS) -> tuple[list[str], np.ndarray]:
    """``{"text", "label"}`` lines (a label of ``labels``: the sentiment classes by default, or a
    task's intents) as texts and class ids. A bad line is an error naming its line number."""
    import json

    labels = list(labels)
    texts, ids = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e.msg}): {line[:120]!r}") from None
        if not isinstance(row, dict) or row.get("label") not in labels or not str(row.get("text", "")).strip():
            shown = labels if len(labels) <= 5 else labels[:5] + ["..."]
            raise ValueError(f"{path}:{n}: needs a text and a label in {shown}, got {line[:120]!r}")
        texts.append(row["text"])
        ids.append(labels.index(row["label"]))
    return texts, np.asarray(ids, dtype=np.int64)


def _take(texts, y, idx) -> Split:
    return Split([texts[i] for i in idx], np.asarray(y)[idx])


def load_task(cfg: FinetuneConfig) -> TaskData:
    """Train/dev (dev split off train, stratified, seeded) and the test sets of a task."""
    rng_seed = cfg.seed
    if cfg.task == "sentiment":
        texts, ys = [], []
        for lang in ("zh", "en"):
            t, y = load_marc(cfg.data_dir, lang, "train")
            if cfg.train_limit:
                _, idx = stratified_split(y, min(1.0, cfg.train_limit / len(t)), rng_seed)
                t, y = [t[i] for i in idx], y[idx]
            texts += t
            ys.append(y)
        y = np.concatenate(ys)
        keep, dev = stratified_split(y, cfg.dev_frac, rng_seed)
        tests = {}
        if cfg.eval_test:
            for lang in ("zh", "en"):
                t, yt = load_marc(cfg.data_dir, lang, "test")
                tests[f"marc_{lang}_test"] = Split(t, yt)
        train = _take(texts, y, keep)
        train.binary = np.zeros(len(train.texts), dtype=bool)
        binary_dev = None
        if cfg.extra_zh_binary or cfg.zh_binary_dev or cfg.eval_test:
            shop_train, binary_dev, shop_tests = shopping_splits(cfg)
            tests.update(shop_tests if cfg.eval_test else {})
            if cfg.extra_zh_binary:  # more Chinese signal, from the trained categories only
                train = Split(train.texts + shop_train.texts, np.concatenate([train.labels, shop_train.labels]),
                              np.concatenate([train.binary, np.ones(len(shop_train.texts), dtype=bool)]))
        if cfg.extra_train:  # shoppers' own rated reviews, exported from the event store
            texts_x, labels_x = read_labelled(cfg.extra_train)
            train = Split(train.texts + texts_x, np.concatenate([train.labels, labels_x]),
                          np.concatenate([train.binary, np.zeros(len(texts_x), dtype=bool)]))
        return TaskData(list(SENTIMENT_LABELS), train, _take(texts, y, dev), tests, binary_dev)
    if cfg.task == "intent":
        from ecrec.learning.intent_data import intent_splits

        d = intent_splits(cfg.data_dir, cfg.seed, zh_variants=cfg.zh_variants, train_limit=cfg.train_limit,
                          none_marc=cfg.none_marc)
        split = lambda t: Split(list(t[0]), np.asarray(t[1]))  # noqa: E731
        tests = {k: split(v) for k, v in d["tests"].items()} if cfg.eval_test else {}
        # the clarify threshold is fitted on the Chinese service utterances of dev: the English dev
        # groups are templates the model gets ~100 % right, so they say nothing about doubt
        none = d["labels"].index("none")
        rows = np.array([i for i, (lang, y) in enumerate(zip(d["dev"][2], d["dev"][1])) if lang == "zh" and y != none])
        train = split(d["train"])
        if cfg.extra_train:  # utterances the help desk labelled (``ecrec retrain intent --labelled``)
            texts_x, labels_x = read_labelled(cfg.extra_train, d["labels"])
            train = Split(train.texts + texts_x, np.concatenate([train.labels, labels_x]))
        return TaskData(d["labels"], train, split(d["dev"]), tests, clarify_rows=rows)
    raise ValueError(f"task must be sentiment or intent, got {cfg.task!r}")


def shopping_splits(cfg: FinetuneConfig) -> tuple[Split, Split | None, dict[str, Split]]:
    """online_shopping_10_cats by category: (training rows from the trained categories, a binary
    dev split of them for calibration, one test split per held-out category). Deterministic."""
    texts, y, cats = load_online_shopping_categories(cfg.data_dir)
    held = set(cfg.zh_heldout_categories)
    unknown = held - set(cats)
    if unknown:
        raise ValueError(f"zh_heldout_categories {sorted(unknown)} are not in online_shopping_10_cats")
    cats_arr = np.asarray(cats)
    trained = np.flatnonzero(~np.isin(cats_arr, list(held)))
    pool, dev_idx = stratified_split(y[trained], min(1.0, cfg.zh_binary_dev / len(trained)), cfg.seed)
    pool, dev_idx = trained[pool], trained[dev_idx]
    if cfg.extra_zh_binary:
        _, sub = stratified_split(y[pool], min(1.0, cfg.extra_zh_binary / len(pool)), cfg.seed)
        pool = pool[sub]
    else:
        pool = pool[:0]
    tests = {}
    seen = {texts[i] for i in trained}  # a short review ("很好") can sit in several categories
    for cat in cfg.zh_heldout_categories:
        idx = np.array([i for i in np.flatnonzero(cats_arr == cat) if texts[i] not in seen], dtype=np.int64)
        _, pick = stratified_split(y[idx], min(1.0, cfg.heldout_per_category / len(idx)), cfg.seed)
        tests[f"shopping_heldout_{cat}"] = binary_split(texts, y, idx[pick])
    dev = binary_split(texts, y, dev_idx) if len(dev_idx) else None
    return binary_split(texts, y, pool), dev, tests


def binary_split(texts, y, idx) -> Split:
    out = _take(texts, y, idx)
    out.binary = np.ones(len(idx), dtype=bool)
    return out


def evaluate_binary(logits: np.ndarray, y: np.ndarray, neutral: int = 1) -> dict:
    """On negative/positive data: the label's accuracy (neutral counts as wrong) and polarity
    accuracy (p(positive) > p(negative), the same as comparing the two logits)."""
    pred = logits.argmax(1)
    polar = np.where(logits[:, 2] > logits[:, 0], 2, 0)
    return {"label_accuracy": float((pred == y).mean()), "polarity_accuracy": float((polar == y).mean()),
            "neutral_share": float((pred == neutral).mean()), "n": int(len(y))}


def binary_masked(logits, binary, neutral: int = 1):
    """Logits (a torch tensor) with the neutral class ruled out on binary-labelled rows."""
    if binary is None or not binary.any():
        return logits
    out = logits.clone()
    out[binary, neutral] = -1e4
    return out


def evaluate(pred: np.ndarray, y: np.ndarray, labels: list[str]) -> dict:
    acc, f1 = accuracy_macro_f1(y, pred, len(labels))
    return {"accuracy": acc, "macro_f1": f1, "n": int(len(y))}


def confusion(pred: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (y, pred), 1)
    return m  # rows: true, columns: predicted


def classification_report(pred: np.ndarray, y: np.ndarray, labels: list[str]) -> str:
    m = confusion(pred, y, len(labels))
    lines = [f"{'label':<28s} precision recall  f1     support"]
    for i, lab in enumerate(labels):
        tp, p, s = m[i, i], m[:, i].sum(), m[i].sum()
        prec = tp / p if p else 0.0
        rec = tp / s if s else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        lines.append(f"{lab:<28s} {prec:9.3f} {rec:6.3f} {f1:6.3f} {s:8d}")
    acc, mf1 = accuracy_macro_f1(y, pred, len(labels))
    lines.append(f"{'accuracy':<28s} {acc:.4f}   macro-F1 {mf1:.4f}   n={len(y)}")
    return "\n".join(lines)


def plot_confusion(pred: np.ndarray, y: np.ndarray, labels: list[str], path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = confusion(pred, y, len(labels))
    size = max(4, 0.35 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    if len(labels) <= 10:
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def balanced_weights(y: np.ndarray, n: int) -> np.ndarray:
    """Inverse-frequency class weights, mean 1 over examples (``class_weights: balanced``)."""
    counts = np.bincount(y, minlength=n).astype(np.float64)
    w = len(y) / (n * np.maximum(counts, 1))
    return (w / (w[y].mean())).astype(np.float32)


def calibrate_bias(logits: np.ndarray, y: np.ndarray, n: int, grid: np.ndarray | None = None,
                   rounds: int = 2, binary_logits: np.ndarray | None = None,
                   binary_y: np.ndarray | None = None, binary_weight: float = 1.0) -> tuple[np.ndarray, float]:
    """Per-class logit offsets that maximise accuracy + macro-F1 on a dev split.

    With ``binary_logits``/``binary_y`` (reviews that are clearly negative or positive) the
    objective adds their label accuracy, so neutral is not handed to a clear review: the offsets
    trade MARC's 3-star neutral against binary data where neutral is always wrong.
    Coordinate ascent over a grid, class by class; the offsets are folded into the head's bias, so
    serving is unchanged. Returns (offsets, best objective).
    """
    grid = np.round(np.arange(-2.0, 2.0001, 0.05), 4) if grid is None else np.asarray(grid)
    grid = grid[np.argsort(np.abs(grid), kind="stable")]  # on ties, the smallest offset wins
    bias = np.zeros(n, dtype=np.float64)

    def score(b):
        acc, f1 = accuracy_macro_f1(y, (logits + b).argmax(1), n)
        if binary_logits is not None and len(binary_y):
            acc += binary_weight * float(((binary_logits + b).argmax(1) == binary_y).mean())
        return acc + f1

    best = score(bias)
    for _ in range(rounds):
        for c in range(n):
            for v in grid:
                trial = bias.copy()
                trial[c] = v
                s = score(trial)
                if s > best + 1e-9:
                    best, bias = s, trial
    return (bias - bias.mean()).astype(np.float32), float(best)


def plot_training_curve(curve: list[dict], path: str | Path, title: str) -> None:
    """Training loss by step (running mean within each epoch) and dev macro-F1 / accuracy after each
    epoch, from the ``curve`` rows a fine-tuning run records (``metrics.json``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in curve if "epoch" not in r]
    epochs = [r for r in curve if "epoch" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in steps], [r["train_loss"] for r in steps], color="tab:blue", lw=1, label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (running mean in the epoch)", color="tab:blue")
    if epochs:
        dev = ax.twinx()
        for key, style in (("dev_macro_f1", "o-"), ("dev_accuracy", "s--")):
            dev.plot([r["step"] for r in epochs], [r[key] for r in epochs], style, color="tab:orange",
                     label=key.replace("_", " "))
        dev.set_ylabel("dev (after each epoch)", color="tab:orange")
        dev.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
