"""Drift monitoring: is what shoppers write and do now still like what the models were fitted on?

A ``Reference`` is fitted once, on training data (``ecrec drift-reference``) or on a chosen period
of live traffic; a ``DriftMonitor`` keeps a bounded recent window and compares it with the
reference:

- text embeddings: the cosine distance between the two mean vectors, and the population stability
  index (PSI) of the texts' positions along the reference's principal directions, binned at the
  reference's deciles;
- the sentiment and intent label mixes and the language mix: PSI over their categories;
- item-popularity concentration: the share of item events that go to the ten most frequent
  items of the window, reference against recent.

PSI = sum over bins of (recent - reference) x ln(recent / reference), each window's shares smoothed
with half a count per bin (so a bin a small window misses by chance is not read as a shift).
The usual reading: under 0.1 stable, 0.1-0.25 a moderate shift, over 0.25 a major one. Every
score is numpy over at most ``window`` rows: about a millisecond, so it runs on the live path
(``bench/drift_cost.py`` compares it with evidently's report on the same windows).
"""
from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FLOOR = 1e-4
BINS = 10


@dataclass(frozen=True)
class DriftConfig:
    window: int = field(default=2000, metadata={"help": "recent texts (and item events) compared"})
    min_recent: int = field(default=200, metadata={"help": "fewer recent texts than this: no verdict yet"})
    projections: int = field(default=8, metadata={"help": "principal directions the embedding PSI looks along"})
    psi_alarm: float = field(default=0.25, metadata={"help": "a label or language mix PSI above this raises the alarm"})
    embedding_psi_alarm: float = field(default=0.5, metadata={
        "help": "the largest PSI along the principal directions above this raises the alarm (300 texts of the "
                "same Chinese reviews reach 0.14 by chance; English reviews 1.2, hotel reviews 2.9)"})
    mean_shift_alarm: float = field(default=0.01, metadata={
        "help": "cosine distance between mean embeddings above this raises the alarm (the encoder centres zh "
                "and en, so a language change barely moves it: 0.001; hotel reviews against shopping 0.02)"})
    concentration_alarm: float = field(default=0.2, metadata={
        "help": "top-10 items' share of item events moving by more than this raises the alarm"})


def psi(reference: np.ndarray, recent: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    p = np.maximum(np.asarray(reference, np.float64), FLOOR)
    q = np.maximum(np.asarray(recent, np.float64), FLOOR)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def smoothed(counts, n: float) -> np.ndarray:
    """Shares from counts with half a count added to every bin (Jeffreys): a bin that a small
    window happens to miss costs ln(n) at most, not ln(1 / FLOOR), so noise stays noise."""
    c = np.asarray(counts, np.float64)
    return (c + 0.5) / (n + 0.5 * len(c))


def top_share(items, n: int = 10) -> float | None:
    c = Counter(items)
    total = sum(c.values())
    return sum(v for _, v in c.most_common(n)) / total if total else None


def _directions(x: np.ndarray, k: int) -> np.ndarray:
    """The reference's ``k`` principal directions: where its texts differ most, so where a shift
    in what people write shows first (random directions mostly see noise in 384 dimensions)."""
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return np.ascontiguousarray(vt[:k], dtype=np.float32)


@dataclass
class Reference:
    mean: np.ndarray  # (dim,) unit mean embedding
    directions: np.ndarray  # (k, dim)
    edges: np.ndarray  # (k, BINS - 1) decile edges of each projection
    mixes: dict[str, dict[str, float]]  # "sentiment" | "intent" | "language" -> category -> share
    top_share: float | None  # top-10 items' share of item events
    n: int  # texts it was fitted on
    source: str = ""

    @classmethod
    def fit(cls, vectors: np.ndarray, sentiments=(), intents=(), languages=(), items=(),
            config: DriftConfig = DriftConfig(), source: str = "") -> "Reference":
        x = np.asarray(vectors, np.float32)
        if x.ndim != 2 or len(x) < 2 * BINS:
            raise ValueError(f"a drift reference needs at least {2 * BINS} text vectors, got {x.shape}")
        # Directions from half the texts, decile edges from the other half: texts projected on
        # directions fitted to themselves spread wider than new texts do (with fewer texts than
        # dimensions, much wider), which read as a shift of every fresh window.
        directions = _directions(x[0::2], config.projections)
        edges = np.quantile(x[1::2] @ directions.T, np.linspace(0, 1, BINS + 1)[1:-1], axis=0).T
        mean = x.mean(axis=0)
        mixes = {}
        for name, labels in (("sentiment", sentiments), ("intent", intents), ("language", languages)):
            c = Counter(labels)
            if c:
                mixes[name] = {k: v / sum(c.values()) for k, v in sorted(c.items())}
        return cls(mean / max(np.linalg.norm(mean), 1e-9), directions, edges, mixes,
                   top_share(items), len(x), source)

    def bin_shares(self, x: np.ndarray) -> np.ndarray:
        """(k, BINS) shares of ``x``'s projections in the reference's bins."""
        proj = x @ self.directions.T
        out = np.zeros((len(self.directions), BINS))
        for j in range(len(self.directions)):
            idx = np.searchsorted(self.edges[j], proj[:, j], side="right")
            out[j] = np.bincount(idx, minlength=BINS) / len(x)
        return out

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, mean=self.mean, directions=self.directions, edges=self.edges)
        path.with_suffix(".json").write_text(json.dumps(
            {"mixes": self.mixes, "top_share": self.top_share, "n": self.n, "source": self.source}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> "Reference":
        path = Path(path)
        z = np.load(path if path.suffix == ".npz" else path.with_suffix(".npz"))
        meta = json.loads(path.with_suffix(".json").read_text())
        return cls(z["mean"], z["directions"], z["edges"], meta["mixes"], meta["top_share"], meta["n"],
                   meta.get("source", ""))


def reference_from_texts(analyzer, texts: list[str], source: str, batch: int = 64,
                         config: DriftConfig = DriftConfig()) -> Reference:
    """A reference from texts run through the serving analyzer (vector, sentiment, intent, language)."""
    rows = []
    for i in range(0, len(texts), batch):
        rows += analyzer.analyze(texts[i : i + batch])
    return Reference.fit(np.stack([a.vector for a in rows]), [a.sentiment.label for a in rows],
                         [a.intent.label for a in rows if a.intent is not None], [a.language for a in rows],
                         config=config, source=source)


class DriftMonitor:
    """The recent window and its scores against a reference. Without a reference it fits one on
    the first ``min_recent`` texts it sees (the period right after a deploy), unless told not to."""

    def __init__(self, reference: Reference | None = None, config: DriftConfig = DriftConfig(),
                 warm_up_reference: bool = True):
        self.reference, self.config, self.warm_up = reference, config, warm_up_reference
        self._vectors: deque = deque(maxlen=config.window)
        self._labels = {name: deque(maxlen=config.window) for name in ("sentiment", "intent", "language")}
        self._items: deque = deque(maxlen=config.window)
        self.observed = 0

    def observe_text(self, vector: np.ndarray, sentiment: str | None = None, intent: str | None = None,
                     language: str | None = None) -> None:
        self._vectors.append(np.asarray(vector, np.float32).reshape(-1))
        for name, value in (("sentiment", sentiment), ("intent", intent), ("language", language)):
            if value is not None:
                self._labels[name].append(value)
        self.observed += 1
        if self.reference is None and self.warm_up and len(self._vectors) >= self.config.min_recent:
            self.refit("the first texts after start")

    def observe_item(self, item_id: str) -> None:
        self._items.append(item_id)

    def refit(self, source: str = "the recent window") -> Reference:
        """Make the recent window the reference (a chosen period), and start a new window. Raises
        ``ValueError`` when the window holds too few texts."""
        if len(self._vectors) < 2 * BINS:
            raise ValueError(f"the recent window holds {len(self._vectors)} texts; a reference needs {2 * BINS}")
        self.reference = Reference.fit(np.stack(self._vectors), self._labels["sentiment"], self._labels["intent"],
                                       self._labels["language"], self._items, self.config, source)
        self._vectors.clear()
        for d in self._labels.values():
            d.clear()
        self._items.clear()
        return self.reference

    def scores(self) -> dict:
        """Every score, the alarms raised and why; ``ready`` is false until there are enough
        recent texts (and a reference)."""
        c, ref, n = self.config, self.reference, len(self._vectors)
        out = {"ready": False, "recent_texts": n, "recent_items": len(self._items), "alarms": [], "alarm_signals": [],
               "reference": None if ref is None else {"texts": ref.n, "source": ref.source}}
        if ref is None or n < c.min_recent:
            return out
        x = np.stack(self._vectors)
        mean = x.mean(axis=0)
        shift = 1.0 - float(mean @ ref.mean) / max(float(np.linalg.norm(mean)), 1e-9)
        ref_bins = smoothed(np.full(BINS, ref.n / BINS), ref.n)
        per_dir = [psi(ref_bins, smoothed(s * n, n)) for s in ref.bin_shares(x)]
        out.update(ready=True, embedding={"mean_shift": shift, "psi_max": max(per_dir), "psi_mean": float(np.mean(per_dir))})
        if shift > c.mean_shift_alarm:
            out["alarms"].append(f"embedding mean shift {shift:.3f} > {c.mean_shift_alarm}")
            out["alarm_signals"].append("embedding_mean_shift")
        if max(per_dir) > c.embedding_psi_alarm:
            out["alarms"].append(f"embedding PSI {max(per_dir):.3f} > {c.embedding_psi_alarm}")
            out["alarm_signals"].append("embedding_psi_max")
        for name, labels in self._labels.items():
            if name not in ref.mixes or not labels:
                continue
            recent = Counter(labels)
            cats = sorted(set(ref.mixes[name]) | set(recent))
            value = psi(smoothed([ref.mixes[name].get(k, 0.0) * ref.n for k in cats], ref.n),
                        smoothed([recent.get(k, 0) for k in cats], len(labels)))
            out[f"{name}_psi"] = value
            out[f"{name}_mix"] = {k: v / len(labels) for k, v in sorted(recent.items())}
            if value > c.psi_alarm:
                out["alarms"].append(f"{name} mix PSI {value:.3f} > {c.psi_alarm}")
                out["alarm_signals"].append(f"{name}_psi")
        recent_top = top_share(self._items)
        out["popularity"] = {"top10_share_reference": ref.top_share, "top10_share_recent": recent_top}
        if ref.top_share is not None and recent_top is not None and abs(recent_top - ref.top_share) > c.concentration_alarm:
            out["alarms"].append(f"top-10 items' share of events moved {ref.top_share:.2f} -> {recent_top:.2f}")
            out["alarm_signals"].append("popularity")
        out["drift"] = bool(out["alarms"])
        return out
