"""Ranking and classification metrics. Ranked lists are best first; relevance is binary or graded."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def recall_at_k(ranked: Sequence, relevant: Iterable, k: int) -> float:
    _check_k(k)
    rel = set(relevant)
    if not rel:
        raise ValueError("relevant set is empty")
    return len(rel.intersection(ranked[:k])) / len(rel)


def hit_rate_at_k(ranked: Sequence, relevant: Iterable, k: int) -> float:
    _check_k(k)
    return float(bool(set(relevant).intersection(ranked[:k])))


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain: sum(gain_i / log2(i + 1)), i from 1."""
    g = np.asarray(gains, dtype=np.float64)
    return float((g / np.log2(np.arange(2, len(g) + 2))).sum())


def ndcg_at_k(ranked: Sequence, relevance: Mapping | Iterable, k: int) -> float:
    """NDCG@k. ``relevance`` maps item -> graded gain, or is a set of relevant items (gain 1)."""
    _check_k(k)
    rel = dict(relevance) if isinstance(relevance, Mapping) else {r: 1.0 for r in relevance}
    if not rel:
        raise ValueError("relevance is empty")
    ideal = dcg(sorted(rel.values(), reverse=True)[:k])
    return dcg([rel.get(x, 0.0) for x in ranked[:k]]) / ideal if ideal > 0 else 0.0


def mrr(ranked: Sequence, relevant: Iterable) -> float:
    """Reciprocal rank of the first relevant item (0 if none)."""
    rel = set(relevant)
    for i, x in enumerate(ranked, 1):
        if x in rel:
            return 1.0 / i
    return 0.0


def catalog_coverage(lists: Iterable[Sequence], catalog_size: int) -> float:
    """Share of the catalog that appears in at least one list."""
    if catalog_size <= 0:
        raise ValueError("catalog_size must be positive")
    return len({x for lst in lists for x in lst}) / catalog_size


def intra_list_diversity(vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance (1 - cos) between the unit vectors of one list."""
    v = np.asarray(vectors, dtype=np.float64)
    n = len(v)
    if n < 2:
        return 0.0
    sims = v @ v.T
    return float((1.0 - sims[np.triu_indices(n, 1)]).mean())


def novelty(ranked: Sequence, popularity: Mapping, n_users: int) -> float:
    """Mean self-information -log2(p(i)), p(i) = users who interacted with i / n_users."""
    if n_users <= 0:
        raise ValueError("n_users must be positive")
    if not ranked:
        return 0.0
    p = [max(popularity.get(x, 0), 1) / n_users for x in ranked]
    return float(np.mean(-np.log2(p)))


def accuracy_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[float, float]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError("y_true and y_pred must be non-empty and of the same shape")
    acc = float((y_true == y_pred).mean())
    f1s = []
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return acc, float(np.mean(f1s))


def target_positions(top: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each row's target in its ranked list ``top`` (n, K); -1 if absent."""
    hit = np.asarray(top) == np.asarray(targets)[:, None]
    return np.where(hit.any(1), hit.argmax(1), -1)


def ranking_report(top: np.ndarray, targets: np.ndarray, ks=(10, 50)) -> dict[str, float]:
    """Leave-one-out metrics over users, one relevant item each: Recall@K (= hit rate), NDCG@K
    and MRR (reciprocal rank within the list, 0 beyond it)."""
    if len(top) == 0 or len(top) != len(targets):
        raise ValueError("top and targets must be non-empty and of the same length")
    pos = target_positions(top, targets)
    found = pos >= 0
    gain = np.where(found, 1.0 / np.log2(np.maximum(pos, 0) + 2.0), 0.0)
    out = {}
    for k in ks:
        _check_k(k)
        if k > np.asarray(top).shape[1]:
            raise ValueError(f"lists hold {np.asarray(top).shape[1]} items, fewer than k={k}")
        within = found & (pos < k)
        out[f"R@{k}"] = float(within.mean())
        out[f"N@{k}"] = float(np.where(within, gain, 0.0).mean())
    out["MRR"] = float(np.where(found, 1.0 / (np.maximum(pos, 0) + 1.0), 0.0).mean())
    return out


def recall_curve(top: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Recall@K for K = 1..len(list): (K,)."""
    pos = target_positions(top, targets)
    K = np.asarray(top).shape[1]
    return np.array([float(((pos >= 0) & (pos < k)).mean()) for k in range(1, K + 1)])
