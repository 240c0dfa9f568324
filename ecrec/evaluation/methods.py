"""Recommendation methods behind one interface: ``rank(split, k) -> (n, k)`` item indices.

Score-based methods give a (users, items) score matrix; the user's own history is excluded
(the UniSRec protocol allows it, and the live engine never re-recommends what was bought).
``Live`` replays each history through the same ``Recommender`` the Serve graph runs.
"""
from __future__ import annotations

import logging

import numpy as np

from ecrec.evaluation.data import SeqDataset, Split
from ecrec.learning.sequence_training import exclude_history, top_k_listed

log = logging.getLogger(__name__)


def _progress(iterable, total: int, desc: str, show: bool):
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)


def recency_weights(n: int, decay: float) -> np.ndarray:
    """decay ** age, newest item age 0: (n,)."""
    return decay ** np.arange(n - 1, -1, -1, dtype=np.float64)


class ScoreMethod:
    name = "score"
    batch = 1024

    def scores(self, histories: list[list[int]]) -> np.ndarray:
        raise NotImplementedError

    def rank(self, split: Split, k: int, progress: bool = False) -> np.ndarray:
        """(n, k) item indices, best first; -1 pads the tail when fewer than k items are left to
        rank (a catalog smaller than k: excluded history items are never listed)."""
        out = np.full((len(split), k), -1, dtype=np.int64)
        starts = range(0, len(split), self.batch)
        for s in _progress(starts, len(starts), self.name, progress):
            h = split.histories[s : s + self.batch]
            out[s : s + len(h)] = top_k_listed(exclude_history(self.scores(h).astype(np.float64), h), k)
        return out


class Popularity(ScoreMethod):
    """Most interactions in the histories visible at prediction time (no targets)."""

    name = "popularity"

    def __init__(self, ds: SeqDataset, split: Split):
        counts = np.bincount(np.concatenate([np.asarray(h) for h in split.histories]), minlength=ds.n_items)
        self.score = counts.astype(np.float64) - 1e-9 * np.arange(ds.n_items)  # ties: lower index first

    def scores(self, histories):
        return np.tile(self.score, (len(histories), 1))


class ItemKNN(ScoreMethod):
    """Item-to-item co-occurrence (cosine of the user-item incidence columns) over the visible
    histories; a user scores an item by recency-weighted similarity to the items they had."""

    name = "itemknn"

    def __init__(self, ds: SeqDataset, split: Split, decay: float = 0.7, shrink: float = 10.0):
        from scipy import sparse

        rows = np.repeat(np.arange(len(split)), [len(h) for h in split.histories])
        cols = np.concatenate([np.asarray(h) for h in split.histories])
        A = sparse.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(split), ds.n_items))
        A.data[:] = 1.0  # duplicates count once
        C = (A.T @ A).toarray()
        n = np.diag(C).copy()
        np.fill_diagonal(C, 0.0)
        self.sim = C / (np.sqrt(np.outer(n, n)) + shrink)
        self.decay = decay

    def scores(self, histories):
        out = np.zeros((len(histories), self.sim.shape[0]))
        for r, h in enumerate(histories):
            out[r] = recency_weights(len(h), self.decay) @ self.sim[h]
        return out


class ZeroShot(ScoreMethod):
    """The encoder's item vectors; the user is the recency-weighted mean of their items."""

    name = "zeroshot"

    def __init__(self, X: np.ndarray, decay: float = 0.7):
        self.X, self.decay = X, decay

    def scores(self, histories):
        Q = np.stack([recency_weights(len(h), self.decay) @ self.X[h] for h in histories])
        return Q @ self.X.T


class Sequence(ScoreMethod):
    """The trained sequence retriever: query vector from the history, inner product with items."""

    name = "sequence"

    def __init__(self, X: np.ndarray, model):
        self.X, self.model = X, model

    def scores(self, histories):
        return self.model.scores(self.X, histories)


class Live:
    """Each history replayed event by event (purchases an hour apart, exploration off) through
    ``Recommender``: profiles, sequence, candidate sources, scoring, MMR, as served."""

    name = "live"

    def __init__(self, recommender, ds: SeqDataset, event_type: str = "purchase", spacing_s: float = 3600.0):
        self.rec, self.ds, self.event_type, self.spacing = recommender, ds, event_type, spacing_s
        self.index_of = {it.id: i for i, it in enumerate(ds.items)}

    def replay(self, user: str, history: list[int], t0: float = 1.6e9) -> float:
        from ecrec.profiles.events import Event

        uid = f"eval-{user}"
        self.rec.forget_user(uid)
        for j, i in enumerate(history):
            self.rec.ingest(Event(user_id=uid, type=self.event_type, item_id=self.ds.items[i].id,
                                  ts=t0 + j * self.spacing))
        return t0 + len(history) * self.spacing

    def recommend(self, user: str, k: int, now: float) -> list[int]:
        return [self.index_of[r.item_id] for r in self.rec.recommend(f"eval-{user}", k=k, now=now)]

    def rank(self, split: Split, k: int, progress: bool = False) -> np.ndarray:
        nows = [self.replay(u, h) for u, h in zip(split.users, split.histories)]
        out = np.full((len(split), k), -1, dtype=np.int64)
        rows = zip(split.users, nows)
        if progress:
            from tqdm import tqdm

            rows = tqdm(rows, total=len(split), desc=self.name, unit="user", leave=False)
        for r, (u, now) in enumerate(rows):
            got = self.recommend(u, k, now)
            out[r, : len(got)] = got
        return out
