"""Readers for the shared real data (``../shared/data``): MARC sentiment and Bitext intents."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path("../shared/data")
SENTIMENT_LABELS = ("negative", "neutral", "positive")


def stars_to_label(star: int) -> int:
    """MARC protocol: 1-2 negative, 3 neutral, 4-5 positive."""
    if star not in (1, 2, 3, 4, 5):
        raise ValueError(f"star must be 1..5, got {star}")
    return 0 if star <= 2 else (1 if star == 3 else 2)


def _csv_rows(data_dir: str | Path, relative: str, encoding: str = "utf-8"):
    """Rows of a CSV in the shared data folder, with a clear error when it is missing."""
    path = Path(data_dir) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --data pointing at the shared data folder")
    with path.open(encoding=encoding, newline="") as f:
        yield from csv.DictReader(f)


def load_marc(data_dir: str | Path, lang: str, split: str) -> tuple[list[str], np.ndarray]:
    """Texts and 3-class labels from ``sentiment/marc_{lang}_{split}.csv``."""
    if lang not in ("zh", "en") or split not in ("train", "test"):
        raise ValueError(f"lang must be zh|en and split train|test, got {lang!r}, {split!r}")
    texts, labels = [], []
    for row in _csv_rows(data_dir, f"sentiment/marc_{lang}_{split}.csv"):
        text = (row["text"] or "").strip()
        if text:
            texts.append(text)
            labels.append(stars_to_label(int(row["star"])))
    return texts, np.asarray(labels, dtype=np.int64)


def load_online_shopping(data_dir: str | Path) -> tuple[list[str], np.ndarray]:
    """Chinese reviews with binary labels from ``online_shopping_10_cats.csv``, as 3-class ids
    (0 negative, 2 positive: there is no neutral in this corpus)."""
    texts, labels, _ = load_online_shopping_categories(data_dir)
    return texts, labels


def load_online_shopping_categories(data_dir: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """``load_online_shopping`` plus each review's product category (书籍, 酒店, 水果, ...)."""
    texts, labels, cats = [], [], []
    for row in _csv_rows(data_dir, "sentiment/online_shopping_10_cats.csv", "utf-8-sig"):
        text = (row["review"] or "").strip().lstrip("\ufeff")
        if text and row["label"] in ("0", "1"):
            texts.append(text)
            labels.append(2 if row["label"] == "1" else 0)
            cats.append(row["cat"].strip())
    return texts, np.asarray(labels, dtype=np.int64), cats


def load_intents(data_dir: str | Path) -> tuple[list[str], list[str]]:
    """Utterances and intent names from ``intents/bitext_20k_utterances.csv``."""
    texts, intents = [], []
    for row in _csv_rows(data_dir, "intents/bitext_20k_utterances.csv", "utf-8-sig"):
        texts.append(row["utterance"].strip())
        intents.append(row["intent"].strip())
    return texts, intents


def stratified_split(labels: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``frac`` of every class held out."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = int(round(len(idx) * frac))
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
