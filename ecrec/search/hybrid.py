"""Personalized hybrid search: BM25 and the encoder's query vector, fused by reciprocal rank,
then re-ranked by the shopper's profile (interests, avoid vector, items already bought).

    score(i) = w_lex * f_lex(i) + w_sem * f_sem(i)                      (0 for a half that missed i)
             + w_personal * unit * (max_interest cos(i) - avoid_weight * cos(i, avoid)) - bought penalty

with f = 1 / (c + rank) ("rrf", unit 1/c) or, for "blend", BM25 over the query's best BM25 and
the cosine min-max scaled over the semantic candidates (unit 0.1). The personal term reorders
items of similar fused score and never brings in an item neither half found. The fusion and its
weights are chosen on validation queries (``ecrec eval-search``). Every part is reported when
``explain`` is asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecrec.retrieval.index import Filters, VectorIndex
from ecrec.search.lexical import LexicalIndex


@dataclass(frozen=True)
class SearchConfig:
    candidates: int = 100  # from each half
    # The defaults weigh both halves alike, for a bilingual shop where the semantic half carries every
    # cross-language query. On Amazon Scientific (English; exact and typo'd title-word queries)
    # validation chose fusion="blend", w_semantic=0.2, w_personal=16: set them through AppArgs
    # (search_*) for such a catalog (docs/EVALUATION.md).
    fusion: str = "rrf"  # "rrf": reciprocal rank; "blend": BM25 / its max + min-max scaled cosine
    rrf_c: float = 60.0
    w_lexical: float = 1.0
    w_semantic: float = 1.0
    w_personal: float = 2.0  # in units of one fused step (1/c for rrf, 0.1 for blend); see above
    avoid_weight: float = 0.6
    bought_penalty: float = 0.5  # of one top RRF score: bought (not rebuyable) items sink


@dataclass
class SearchHit:
    item_id: str
    score: float
    parts: dict = field(default_factory=dict)


class HybridSearch:
    def __init__(self, lexical: LexicalIndex, index: VectorIndex, items: dict, config: SearchConfig = SearchConfig()):
        self.lexical, self.index, self.items, self.config = lexical, index, items, config

    def search(self, query: str, query_vec: np.ndarray | None, k: int = 10, filters: Filters | None = None,
               profile=None, now: float = 0.0, mode: str = "hybrid") -> list[SearchHit]:
        """``mode``: "hybrid", "lexical" or "semantic" (the halves alone, for evaluation); the
        profile re-ranks in every mode when given."""
        c = self.config
        n = max(k, c.candidates)
        lex = sem = []
        if mode in ("hybrid", "lexical"):
            meta = self.index.meta
            lex = self.lexical.search(query, n, lambda i: i in meta and (filters is None or filters.admits(i, meta[i])))
        if mode in ("hybrid", "semantic") and query_vec is not None and len(self.index):
            sem = self.index.search(query_vec, n, filters)
        parts: dict[str, dict] = {}
        for name, ranked, w in (("lexical", lex, c.w_lexical), ("semantic", sem, c.w_semantic)):
            for r, (i, v) in enumerate(ranked):
                parts.setdefault(i, {"lexical": 0.0, "semantic": 0.0})[name] = w * self._fused(name, r, v, ranked)
        if not parts:
            return []
        ids = list(parts)
        fused = np.array([parts[i]["lexical"] + parts[i]["semantic"] for i in ids])
        personal = self._personal(ids, profile, now)
        score = fused + personal
        for i, p, s in zip(ids, personal, score):
            parts[i]["personal"] = float(p)
        order = np.argsort(-score, kind="stable")[:k]
        return [SearchHit(ids[o], float(score[o]), {key: round(v, 6) for key, v in parts[ids[o]].items()})
                for o in order]

    def _fused(self, half: str, rank: int, value: float, ranked: list[tuple[str, float]]) -> float:
        if self.config.fusion == "rrf":
            return 1.0 / (self.config.rrf_c + rank + 1)
        hi, lo = ranked[0][1], ranked[-1][1]
        if half == "lexical":  # BM25 > 0 for every lexical hit: over the best, never 0 like a miss
            return value / hi if hi > 0 else 0.0
        return (value - lo) / (hi - lo) if hi > lo else 1.0

    @property
    def unit(self) -> float:
        """One "step" of the fused score: what the personal term and the bought penalty scale by."""
        return 1.0 / self.config.rrf_c if self.config.fusion == "rrf" else 0.1

    def _personal(self, ids: list[str], profile, now: float) -> np.ndarray:
        c = self.config
        out = np.zeros(len(ids))
        if profile is None or profile.is_cold or c.w_personal == 0:
            return out
        x = np.stack([self.index.vector(i) for i in ids])
        interests = [profile.interest_vector(now), *profile.interest_centroids()]
        like = np.max(x @ np.stack(interests).T, axis=1)
        avoid = x @ profile.avoid_vector() if np.any(profile.avoid) else 0.0
        out = c.w_personal * self.unit * (like - c.avoid_weight * avoid)
        bought = np.array([profile.has_bought(i) and not self.items[i].rebuyable for i in ids])
        return out - bought * c.bought_penalty * (c.w_lexical + c.w_semantic) * self.unit
