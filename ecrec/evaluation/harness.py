"""``ecrec eval``: every method on one split of one dataset, full ranking, one table.

RecBole's shape without its string-keyed config: the dataset (``data``), methods behind one
interface (``methods``), metrics as pure functions (``ecrec.evaluation.metrics``). Writes JSON and a PNG of
Recall@K for K = 1..50.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ecrec.evaluation.data import SeqDataset, Split, load_dataset
from ecrec.evaluation.methods import ItemKNN, Live, Popularity, Sequence, ZeroShot
from ecrec.evaluation.metrics import intra_list_diversity, ranking_report, recall_curve

log = logging.getLogger(__name__)

METHODS = ("popularity", "itemknn", "zeroshot", "live", "sequence")
K = 50


@dataclass(frozen=True)
class EvalOptions:
    data: Path
    fmt: str = "auto"
    split: str = "test"
    methods: tuple[str, ...] = METHODS
    out: Path | None = None
    plot: Path | None = None
    checkpoint: Path | None = field(default=None, metadata={"help": "sequence model (trained here if missing)"})
    train_time_cap_s: float = 900.0
    train_workers: int = 2
    limit: int | None = field(default=None, metadata={"help": "first N users only (tests, quick looks)"})
    zeroshot_decay: float = 0.7
    itemknn_decay: float = 0.7
    progress: bool = True
    home: Path | None = None
    trainer: Callable | None = field(default=None, metadata={
        "help": "trains a missing sequence model: trainer(X, ds, cfg, storage=...) -> (model, report); None: "
                "in this process, without Ray (``ecrec eval`` plugs in Ray Train where it is installed)"})


def item_vectors(ds: SeqDataset, encoder, cache_dir: Path | None) -> np.ndarray:
    """The encoder's ``passage`` vectors of every item, as the served index holds them: (n, dim)."""
    from ecrec.text.encoder import encode_cached

    return encode_cached(encoder, [it.embedding_text() for it in ds.items], "passage", cache_dir)


def default_checkpoint(ds: SeqDataset) -> Path:
    return Path("runs") / "sequence" / f"{ds.name}-{ds.n_items}" / "sequence.safetensors"


def sequence_model(ds: SeqDataset, X: np.ndarray, opts: EvalOptions):
    """Load the checkpoint for this dataset; the shipped one if it was trained on it; else train
    (with ``opts.trainer``, Ray Train under ``ecrec eval`` where Ray is installed; in this process
    otherwise) under the time cap and save it."""
    from ecrec.retrieval.sequence import SequenceConfig, load_sequence_model, save_sequence_model, shipped_sequence_path
    from ecrec.learning.sequence_training import SequenceTrainConfig, train_sequence

    path = opts.checkpoint or default_checkpoint(ds)
    if path.exists():
        return load_sequence_model(path)[0]
    shipped = shipped_sequence_path()
    if opts.checkpoint is None and shipped.exists():
        model, meta = load_sequence_model(shipped)
        # a model trained on the valid targets may only be judged on test
        clean_for_split = opts.split == "test" or meta.get("trained_on", "train") == "train"
        if meta.get("dataset") == ds.name and meta.get("items") == ds.n_items and clean_for_split:
            log.info("using the shipped sequence model (trained on %s)", ds.name)
            return model
    cfg = SequenceTrainConfig(model=SequenceConfig(id_items=ds.n_items), time_cap_s=opts.train_time_cap_s,
                              workers=opts.train_workers, threads=2 if opts.train_workers == 1 else 1)
    log.info("no sequence checkpoint at %s: training one (cap %.0f s)", path, cfg.time_cap_s)
    if opts.trainer is not None:
        model, report = opts.trainer(X, ds, cfg, storage=path.parent / "ray")
    else:
        model, report = train_sequence(X, ds.train_sequences(), ds.valid, cfg)
    vocab = [it.id for it in ds.items]
    save_sequence_model(model, path, {"dataset": ds.name, "items": ds.n_items, "vocab": vocab,
                                      **{k: v for k, v in report.items() if k != "history"}})
    model.vocab = {item: row for row, item in enumerate(vocab)}
    return model


def live_method(ds: SeqDataset, X: np.ndarray, analyzer, seq_model, opts: EvalOptions):
    from ecrec.retrieval.ranking import RankingConfig
    from ecrec.recommender import Recommender, RecommenderConfig

    rec = Recommender(analyzer, RecommenderConfig(ranking=RankingConfig(explore_share=0.0), sequence_model="none"))
    rec.ranker.sequence = seq_model
    rec.add_items(ds.items, X)
    return Live(rec, ds)


def evaluate_lists(top: np.ndarray, split: Split, X: np.ndarray) -> dict:
    m = ranking_report(top, split.targets, ks=(10, 50))
    top10 = top[:, :10]
    m["coverage@10"] = float(len(np.unique(top10[top10 >= 0])) / len(X))
    m["ild@10"] = float(np.mean([intra_list_diversity(X[t[t >= 0]]) for t in top10]))
    return m


def run_eval(opts: EvalOptions, analyzer=None) -> dict:
    unknown = set(opts.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    ds = load_dataset(opts.data, opts.fmt)
    split = ds.split(opts.split).head(opts.limit)
    # every method needs the item vectors: ILD is measured on them
    from ecrec.text.encoder import default_home

    if analyzer is None:
        from ecrec.recommender import RecommenderConfig, load_analyzer

        analyzer = load_analyzer(RecommenderConfig(), opts.home)
    X = item_vectors(ds, analyzer.encoder, (opts.home or default_home()) / "cache")
    result = {"dataset": ds.name, "split": opts.split, "users": len(split), "items": ds.n_items,
              "methods": {}, "curves": {}}
    seq_model = None
    for name in opts.methods:
        t0 = time.perf_counter()
        if name == "popularity":
            method = Popularity(ds, split)
        elif name == "itemknn":
            method = ItemKNN(ds, split, opts.itemknn_decay)
        elif name == "zeroshot":
            method = ZeroShot(X, opts.zeroshot_decay)
        else:
            seq_model = seq_model or sequence_model(ds, X, opts)
            method = Sequence(X, seq_model) if name == "sequence" else live_method(ds, X, analyzer, seq_model, opts)
        top = method.rank(split, K, progress=opts.progress)
        m = evaluate_lists(top, split, X)
        m["seconds"] = round(time.perf_counter() - t0, 2)
        result["methods"][name] = m
        result["curves"][name] = recall_curve(top, split.targets).round(5).tolist()
        log.info("%s: %s", name, m)
    if opts.out:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(result, indent=2))
    plot = opts.plot or (opts.out.with_suffix(".png") if opts.out else None)
    if plot:
        plot_recall(result, plot)
    return result


def format_table(result: dict) -> str:
    cols = ("R@10", "N@10", "R@50", "N@50", "MRR", "coverage@10", "ild@10", "seconds")
    lines = [f"{result['dataset']} {result['split']}: {result['users']} users, {result['items']} items, full ranking",
             f"{'method':<12}" + "".join(f"{c:>12}" for c in cols)]
    for name, m in result["methods"].items():
        lines.append(f"{name:<12}" + "".join(f"{m[c]:>12.4f}" if c != "seconds" else f"{m[c]:>12.1f}"
                                             for c in cols))
    return "\n".join(lines)


def plot_recall(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in result["curves"].items():
        ax.plot(range(1, len(curve) + 1), curve, label=name)
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_title(f"{result['dataset']} {result['split']} ({result['users']} users, full ranking)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
