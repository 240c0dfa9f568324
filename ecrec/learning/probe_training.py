"""Train and evaluate the MARC sentiment probe (``ecrec train-probe``)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ecrec.text.encoder import encode_cached
from ecrec.learning.datasets import load_marc, stratified_split
from ecrec.evaluation.metrics import accuracy_macro_f1
from ecrec.text.sentiment import LinearProbe, train_probe
from ecrec.text.prepare import clean

log = logging.getLogger(__name__)


def embed_cached(encoder, texts: list[str], cache_dir: Path | None) -> np.ndarray:
    """Clean and encode reviews (``query`` role), cached: embedding all of MARC takes minutes."""
    return encode_cached(encoder, [clean(t).text for t in texts], "query", cache_dir, align=False)


def _subsample(texts, labels, limit, seed):
    if limit is None or limit >= len(texts):
        return texts, labels
    _, idx = stratified_split(labels, limit / len(texts), seed)
    return [texts[i] for i in idx], labels[idx]


def fit_marc_probe(encoder, data_dir: str | Path, limit: int | None = None, test_limit: int | None = None,
                   cache_dir: Path | None = None, seed: int = 0) -> tuple[LinearProbe, dict]:
    """Fit on MARC zh+en train (a stratified 10% dev split picks the weight decay), report test."""
    xs, ys = [], []
    for lang in ("zh", "en"):
        t, y = _subsample(*load_marc(data_dir, lang, "train"), limit, seed)
        xs.append(embed_cached(encoder, t, cache_dir))
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    train_idx, dev_idx = stratified_split(y, 0.1, seed)
    best = None
    for wd in (1e-5, 1e-4, 1e-3):
        probe = train_probe(x[train_idx], y[train_idx], weight_decay=wd, seed=seed)
        acc, f1 = accuracy_macro_f1(y[dev_idx], probe.predict_proba(x[dev_idx]).argmax(1), 3)
        log.info("weight_decay %g: dev accuracy %.4f macro-F1 %.4f", wd, acc, f1)
        if best is None or f1 > best[0]:
            best = (f1, wd, acc)
    probe = train_probe(x, y, weight_decay=best[1], seed=seed)
    report = {"encoder": encoder.name, "max_length": encoder.config.max_length,
              "train_examples": int(len(y)), "weight_decay": best[1],
              "dev": {"accuracy": best[2], "macro_f1": best[0]}}
    for lang in ("zh", "en"):
        t, yt = _subsample(*load_marc(data_dir, lang, "test"), test_limit, seed)
        pred = probe.predict_proba(embed_cached(encoder, t, cache_dir)).argmax(1)
        acc, f1 = accuracy_macro_f1(yt, pred, 3)
        report[f"test_{lang}"] = {"accuracy": acc, "macro_f1": f1, "n": int(len(yt))}
    probe.info = report
    return probe, report
