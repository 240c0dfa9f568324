"""Candidate generation, scoring, MMR diversity, anti-fatigue and exploration.

Candidates come from named sources walked in order with an exclude-set (interest vectors,
items similar to recent positives, trending, fresh); a cold user falls back to the request's
text, then popular items. Every recommendation carries its score parts and a reason.

A request travels as a ``RankRequest`` (``request.py``, built once by ``Ranker.request``) from
method to method; the Ranker keeps only what many requests share (catalog orders, the trending
order), so threads may rank on one Ranker at once.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from ecrec.retrieval.catalog import Item
from ecrec.retrieval.covisit import CoVisits
from ecrec.retrieval.index import Filters, VectorIndex
from ecrec.retrieval.request import RankRequest, exclusion
from ecrec.profiles.profile import ProfileConfig, UserProfile
from ecrec.text.language import is_chinese


@dataclass(frozen=True)
class RankingConfig:
    candidates_per_source: int = field(default=60, metadata={"help": "FAISS hits per source"})
    text_share: float = field(default=0.6, metadata={"help": "weight of request text vs profile"})
    avoid_weight: float = field(default=0.6, metadata={"help": "penalty on cos(item, avoid)"})
    centroid_penalty: float = field(default=0.03, metadata={"help": "handicap of the weakest interest"})
    w_popularity: float = 0.02
    w_rating: float = 0.02
    w_freshness: float = 0.01
    fresh_days: float = 30.0
    fatigue: float = field(default=0.03, metadata={"help": "score lost per recent impression"})
    mmr_lambda: float = field(default=0.95, metadata={"help": "1 = relevance only; e5 cosines are compressed (0.7-1), so small steps matter"})
    explore_share: float = field(default=0.1, metadata={"help": "slots for Thompson-sampled new items"})
    explore_max_impressions: int = 50
    explore_pool: int = field(default=100, metadata={"help": "newest under-shown items sampled from"})
    exclude_seen: bool = True
    covisit_weight: float = field(default=0.15, metadata={
        "help": "weight of co-visitation (bought together), scaled to the shopper's best item; tuned on valid"})
    covisit_decay: float = field(default=0.7, metadata={"help": "recency weight per step back in the sequence"})
    sequence_weight: float = field(default=0.7, metadata={
        "help": "share of the sequence retriever in similarity, times the share of the shopper's recent "
                "items the model was trained on (tuned on the Amazon Scientific valid split, docs/EVALUATION.md)"})
    trending_refresh_s: float = field(default=1.0, metadata={
        "help": "the trending order is recomputed at most this often (in event time) while counters move"})
    similar_same_category: float = field(default=0.02, metadata={
        "help": "similar_to(): a product page's similar items prefer its own category by this much"})
    seed: int = 0


@dataclass
class ItemStats:
    """Global per-item counters: popularity (decayed interactions), impressions, clicks."""

    popularity: dict = field(default_factory=dict)
    impressions: dict = field(default_factory=dict)
    clicks: dict = field(default_factory=dict)
    covisits: CoVisits = field(default_factory=CoVisits)
    version: int = 0  # bumped when popularity changes (invalidates cached orderings)

    def interaction(self, item_id: str, weight: float) -> None:
        self.popularity[item_id] = self.popularity.get(item_id, 0.0) + max(weight, 0.0)
        self.version += 1

    def shown(self, item_ids) -> None:
        for i in item_ids:
            self.impressions[i] = self.impressions.get(i, 0) + 1

    def clicked(self, item_id: str) -> None:
        self.clicks[item_id] = self.clicks.get(item_id, 0) + 1


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    source: str
    reason: str
    parts: dict


TRENDING_TOP = 1024  # items ranked by popularity + rating; past them the walk goes by rating alone


@dataclass(frozen=True)
class _CatalogOrders:
    stamp: tuple
    ids: list[str]
    pos: dict[str, int]
    rating: np.ndarray
    by_rating: list[str]  # best rated first (ties in catalog order)
    fresh: list[str]  # newest first


@dataclass(frozen=True)
class _Trending:
    stamp: tuple
    version: int
    at: float  # event time it was computed for
    top: list[str]
    top_set: frozenset[str]


def stable_seed(*parts) -> int:
    """A seed that is the same in every process (never Python's salted ``hash``)."""
    return int.from_bytes(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


class Ranker:
    def __init__(self, index: VectorIndex, items: dict[str, Item], stats: ItemStats,
                 config: RankingConfig = RankingConfig(), profile_config: ProfileConfig = ProfileConfig(),
                 sequence=None):
        self.index, self.items, self.stats = index, items, stats
        self.config, self.profile_config = config, profile_config
        self.sequence = sequence  # ecrec.retrieval.sequence.SequenceModel or None
        # shared by every request, replaced whole (never changed in place) and stamped with what
        # they were computed from: a thread reads each once and keeps the one it read
        self._orders: _CatalogOrders | None = None
        self._trending: _Trending | None = None

    def covisit_scores(self, profile: UserProfile | None) -> dict[str, float]:
        if profile is None or not profile.recent or self.config.covisit_weight <= 0:
            return {}
        return self.stats.covisits.scores(profile.recent, self.config.covisit_decay)

    def sequence_query(self, profile: UserProfile | None):
        """The sequence retriever's query from the shopper's recent items (None without)."""
        if self.sequence is None or profile is None or self.config.sequence_weight <= 0:
            return None
        recent = [i for i in profile.recent if i in self.index]
        if not recent or self.sequence.coverage(recent) == 0:
            # out of its domain the model is the text-only recency mean, which the profile rule
            # already covers, and it cannot read what the shopper wrote: leave the ranking alone
            return None
        return self.sequence.query(np.stack([self.index.vector(i) for i in recent]), recent)

    # ---- one request ---------------------------------------------------------------------
    def request(self, profile: UserProfile | None, k: int, now: float, filters: Filters | None = None,
                text_vec: np.ndarray | None = None, text: str | None = None) -> RankRequest:
        """Everything a ranking reads about one request, computed once."""
        if not isinstance(k, int) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        base = filters or Filters()
        excluded = exclusion(profile, self.items, self.config.exclude_seen, base.exclude)
        filters = Filters(base.categories, base.min_price, base.max_price, base.in_stock, excluded.ids)
        return RankRequest(profile, k, now, filters, excluded, self.index.allowed(filters), text_vec, text,
                           self.sequence_query(profile), self.covisit_scores(profile))

    # ---- shared orders -------------------------------------------------------------------
    def _catalog_orders(self) -> _CatalogOrders:
        """Orders that change only with the catalog (numpy sorts, once per catalog version)."""
        stamp = (len(self.items), self.index.version)
        orders = self._orders
        if orders is None or orders.stamp != stamp:
            ids = self.index.ids
            rating = np.array([self.items[i].rating for i in ids], np.float64)
            created = np.array([self.items[i].created_at for i in ids], np.float64)
            orders = self._orders = _CatalogOrders(
                stamp, ids, {i: j for j, i in enumerate(ids)}, rating,
                [ids[j] for j in np.argsort(-rating, kind="stable")],
                [ids[j] for j in np.argsort(-created, kind="stable")])
        return orders

    def _trending_top(self, now: float) -> _Trending:
        """The ``TRENDING_TOP`` items by popularity + 0.1 x rating. Recomputed when the counters
        moved and ``trending_refresh_s`` of event time passed (at once when the catalog changed):
        a top-k selection in numpy, never a sort of the whole catalog per request."""
        orders = self._catalog_orders()
        t = self._trending
        version = self.stats.version  # read before the counters: a bump meanwhile recomputes next time
        if (t is None or t.stamp != orders.stamp or (t.version != version and not
                                                     0 <= now - t.at < self.config.trending_refresh_s)):
            score = 0.1 * orders.rating
            pos = orders.pos
            for i, p in self.stats.popularity.items():
                j = pos.get(i)
                if j is not None:
                    score[j] += p
            m = min(TRENDING_TOP, len(score))
            top = np.argpartition(-score, m - 1)[:m] if m else np.zeros(0, np.int64)
            top = top[np.lexsort((top, -score[top]))]  # by score, ties in catalog order
            ids = [orders.ids[j] for j in top]
            t = self._trending = _Trending(orders.stamp, version, now, ids, frozenset(ids))
        return t

    # ---- candidates ----------------------------------------------------------------------
    def _popular(self, req: RankRequest, n: int) -> list[str]:
        t, orders = self._trending_top(req.now), self._catalog_orders()
        walk = itertools.chain(t.top, (i for i in orders.by_rating if i not in t.top_set))
        return self._first(walk, n, req.allows)

    def _fresh(self, req: RankRequest, n: int) -> list[str]:
        return self._first(self._catalog_orders().fresh, n, req.allows)

    @staticmethod
    def _first(order, n: int, allowed) -> list[str]:
        out = []
        for i in order:
            if allowed(i):
                out.append(i)
                if len(out) == n:
                    break
        return out

    def candidates(self, req: RankRequest) -> list[tuple[str, str]]:
        """(item id, source) pairs, first source wins, in source order; none that ``req`` excludes."""
        n = self.config.candidates_per_source
        profile, seq_vec, covisit, excluded = req.profile, req.seq_vec, req.covisit, req.excluded
        seen: dict[str, str] = {}

        def take(ids, source):  # the index already left out ``excluded.ids``; not the keyed ones
            for i in ids:
                if not excluded(i):
                    seen.setdefault(i, source)

        # every vector query of this request in one index call, taken in source order below
        queries: list[tuple[np.ndarray, int, str]] = []
        if req.text_vec is not None:
            queries.append((req.text_vec, n, "request"))
        if seq_vec is not None:
            queries.append((self.sequence.search_vector(seq_vec).numpy(), n, "sequence"))
        if profile is not None and not profile.is_cold:
            q = profile.interest_vector(req.now, self.profile_config) - \
                self.config.avoid_weight * profile.avoid_vector()
            queries.append((q, n, "interest"))
            for c in profile.interest_centroids():
                queries.append((c, n // 3 + 1, "interest"))
            for item in list(profile.recent_positive)[::-1][:3]:
                if item in self.index:
                    queries.append((self.index.vector(item), 10, f"similar:{item}"))
        hits = self.index.search_many(np.stack([np.asarray(q, np.float32).reshape(-1) for q, _, _ in queries]),
                                      [k for _, k, _ in queries], req.filters) if queries else []
        results = list(zip(hits, (src for _, _, src in queries)))
        head = [r for r in results if r[1] in ("request", "sequence")]
        for found, source in head:
            take((i for i, _ in found), source)
        if seq_vec is not None:  # what the retriever learned from clicks, which text search cannot find
            # 4n rows, so that n are left once filters and the shopper's own items are taken out
            take(self._first(self.sequence.id_candidates(seq_vec, 4 * n), n,
                             lambda i: req.allows(i) and i in self.items), "sequence")
        if covisit:
            best = sorted(covisit, key=lambda i: (-covisit[i], i))
            take(self._first([i for i in best if i in self.items], n, req.allows), "bought_together")
        for found, source in results[len(head):]:
            take((i for i, _ in found), source)
        take(self._popular(req, n // 3), "trending")
        take(self._fresh(req, n // 6), "fresh")
        return list(seen.items())

    # ---- scoring -------------------------------------------------------------------------
    def recommend(self, profile: UserProfile | None, k: int, now: float, filters: Filters | None = None,
                  text_vec: np.ndarray | None = None, text: str | None = None) -> list[Recommendation]:
        """Top ``k`` for one request; safe to call from several threads at once (the catalog and
        the counters must not change meanwhile: that is the caller's lock, if it changes them)."""
        return self.rank(self.request(profile, k, now, filters, text_vec, text))

    def rank(self, req: RankRequest) -> list[Recommendation]:
        cands = self.candidates(req)
        if not cands:
            return []
        ids = [i for i, _ in cands]
        X = np.stack([self.index.vector(i) for i in ids])  # (n, dim)
        parts = self._parts(ids, X, req)
        if req.covisit:
            top = max(req.covisit.values())
            parts["bought_together"] = self.config.covisit_weight * np.array(
                [req.covisit.get(i, 0.0) / top for i in ids], np.float32)
        score = sum(parts.values())
        order = self._mmr(X, score, req.k)
        recs = [self._rec(ids[j], cands[j][1], score[j], {p: float(v[j]) for p, v in parts.items()},
                          X[j], req.profile, req.text) for j in order]
        return self._explore(recs, req)

    def _parts(self, ids, X, req: RankRequest) -> dict[str, np.ndarray]:
        c, profile, text_vec, now, seq_vec = self.config, req.profile, req.text_vec, req.now, req.seq_vec
        sim = np.zeros(len(ids), np.float32)
        avoid = np.zeros(len(ids), np.float32)
        warm = profile is not None and not profile.is_cold
        if warm:
            sim += self._interest_similarity(X, profile, now)
        if seq_vec is not None:
            # the retriever's cosines, calibrated like an interest's: its best candidate scores 1
            s = self.sequence.item_scores(seq_vec, X, ids)
            seq = 1.0 + s - s.max()
            w = c.sequence_weight * self.sequence.coverage(profile.recent)
            sim = (1 - w) * sim + w * seq if warm else seq
        if profile is not None:
            avoid -= c.avoid_weight * (X @ profile.avoid_vector())
        if text_vec is not None:
            sim = (1 - c.text_share) * sim + c.text_share * (X @ text_vec) if warm else X @ text_vec
        popularity, items = self.stats.popularity, self.items
        pop, rating, created = np.array([(popularity.get(i, 0.0), items[i].rating, items[i].created_at)
                                         for i in ids], np.float64).reshape(-1, 3).T
        pop = np.log1p(pop) / max(np.log1p(pop.max()), 1e-9)
        rating = ((rating - 3.0) / 2.0).clip(-1, 1)
        age_days = np.maximum(0.0, now - created) / 86400
        fatigue = (profile.impression_counts(ids, now, self.profile_config) if profile
                   else np.zeros(len(ids)))
        return {
            "similarity": sim, "avoid": avoid,
            "popularity": c.w_popularity * pop, "rating": c.w_rating * rating,
            "freshness": c.w_freshness * np.exp(-age_days / c.fresh_days),
            "fatigue": -c.fatigue * fatigue,
        }

    def _interest_similarity(self, X: np.ndarray, profile: UserProfile, now: float) -> np.ndarray:
        """Multi-interest matching (as in MIND): an item is as relevant as its best-matching
        interest (the blended one or a centroid).

        Each interest's cosines are calibrated against its best candidate: item-derived interests
        (passage vectors) match items at ~0.95 while text-derived ones (query vectors) top out
        near ~0.89, so raw cosines would let whatever was clicked drown out what was asked for.
        Weaker and older centroids pay up to ``centroid_penalty``; the latest one pays nothing.
        """
        vecs = [profile.interest_vector(now, self.profile_config), *profile.interest_centroids()]
        S = X @ np.stack(vecs).T  # (n, 1 + m)
        S = S - S.max(axis=0, keepdims=True)
        if len(vecs) > 1:
            strength = np.linalg.norm(profile.interests, axis=1)
            share = strength / max(strength.max(), 1e-9)
            age = np.maximum(0.0, now - np.asarray(profile.interest_ts, dtype=np.float64))
            recency = 0.5 ** (age / self.profile_config.session_half_life_s)
            if len(profile.interest_ts):
                recency[int(np.argmax(profile.interest_ts))] = 1.0
            S[:, 1:] -= self.config.centroid_penalty * (1 - np.maximum(share, recency))[None, :]
        S[:, 0] -= self.config.centroid_penalty  # the blend is a fallback, not a favourite
        return 1.0 + S.max(axis=1)

    def _mmr(self, X: np.ndarray, score: np.ndarray, k: int) -> list[int]:
        lam = self.config.mmr_lambda
        chosen: list[int] = []
        base = lam * score
        max_sim = np.zeros(len(score))  # the best similarity to a chosen item (none chosen: no penalty)
        for step in range(min(k, len(score))):
            mmr = base - (1 - lam) * max_sim
            mmr[chosen] = -np.inf
            j = int(np.argmax(mmr))
            chosen.append(j)
            sim = X @ X[j]
            max_sim = sim.astype(np.float64) if step == 0 else np.maximum(max_sim, sim)
        return chosen

    def similar_to(self, item_id: str, k: int) -> list[dict]:
        """A product page's "similar items": nearest by vector, its own category first on ties
        of meaning (a small bonus), as plain dicts with a reason in the item's language."""
        vec, cat = self.index.vector(item_id), self.items[item_id].top_category
        hits = self.index.search(vec, min(len(self.index), 3 * k + 1), Filters(exclude=frozenset([item_id])))
        scored = sorted(((s + (self.config.similar_same_category if self.items[i].top_category == cat else 0.0), i)
                         for i, s in hits), key=lambda t: -t[0])[:k]
        out = []
        for s, i in scored:
            it = self.items[i]
            zh, same = is_chinese(it.title), it.top_category == cat
            reason = (("同类相似商品" if zh else "Similar, same category") if same
                      else ("相似商品" if zh else "Similar item"))
            out.append({"item_id": i, "title": it.title, "score": float(s), "category": it.category,
                        "price": it.price, "reason": reason})
        return out

    # ---- exploration ---------------------------------------------------------------------
    def _explore(self, recs, req: RankRequest) -> list[Recommendation]:
        k, profile = req.k, req.profile
        n = int(math.floor(k * self.config.explore_share))
        if n == 0 or len(recs) < k:
            return recs
        # The pool: the newest items still short of impressions (bounded, so a million-item
        # catalog costs the same as ours), that the request allows.
        kept = {r.item_id for r in recs[: k - n]}
        limit, size, shown = self.config.explore_max_impressions, self.config.explore_pool, self.stats.impressions
        pool = []
        for i in self._catalog_orders().fresh:
            if shown.get(i, 0) < limit and i not in kept and req.allows(i):
                pool.append(i)
                if len(pool) == size:
                    break
        if not pool:
            return recs
        rng = np.random.default_rng(stable_seed(self.config.seed, profile.user_id if profile else "",
                                                profile.version if profile else 0, int(req.now // 60)))
        # Beta(1 + clicks, 1 + unclicked impressions); clicks can arrive without a logged impression
        clicks = np.array([self.stats.clicks.get(i, 0) for i in pool], dtype=np.float64)
        shown = np.array([self.stats.impressions.get(i, 0) for i in pool], dtype=np.float64)
        draws = rng.beta(1 + clicks, 1 + np.maximum(0, shown - clicks))
        picks = [pool[j] for j in np.argsort(-np.asarray(draws), kind="stable")[:n]]
        explored = [Recommendation(i, 0.0, "explore", "新品推荐，来看看" if is_chinese(self.items[i].title)
                                   else "New for you to discover", {"explore": 1.0}) for i in picks]
        return recs[: k - len(explored)] + explored

    # ---- reasons -------------------------------------------------------------------------
    def _rec(self, item_id, source, score, parts, x, profile, text) -> Recommendation:
        return Recommendation(item_id, float(score), source, self._reason(source, x, profile, text), parts)

    def _reason(self, source: str, x: np.ndarray, profile, text) -> str:
        if source == "request" and text:
            return f"符合你的需求：{text[:40]}" if is_chinese(text) else f"Matches your request: {text[:60]}"
        if source == "bought_together" and profile is not None and profile.recent:
            ref = self.items.get(profile.recent[-1])
            title = ref.title if ref else profile.recent[-1]
            return f"买了「{title}」的人也买了" if is_chinese(title) else f"Often bought with {title}"
        if source.startswith("similar:"):
            ref = self.items.get(source.split(":", 1)[1])
            title = ref.title if ref else source.split(":", 1)[1]
            return f"与你喜欢的「{title}」相似" if is_chinese(title) else f"Similar to {title}, which you liked"
        if profile is not None and source in ("interest", "sequence"):
            # The closest thing the shopper said or did; item-to-item cosines run higher than
            # text-to-item ones (passage vs query vectors), so item reasons need a clear lead.
            best, best_s = None, -np.inf
            for r in profile.reasons:
                v = r.vector if r.vector is not None else (self.index.vector(r.label) if r.label in self.index else None)
                if r.weight > 0.1 and v is not None:
                    s = float(x @ v.astype(np.float32)) - (0.06 if r.kind == "item" else 0.0)
                    if s >= best_s:  # a tie (two clauses that fed one interest): the newer one
                        best, best_s = r, s
            if best is not None and best.kind == "text":
                return f"因为你说：{best.label}" if is_chinese(best.label) else f"Because you said: “{best.label}”"
            if best is not None:
                ref = self.items.get(best.label)
                title = ref.title if ref else best.label
                return f"因为你关注了「{title}」" if is_chinese(title) else f"Because you showed interest in {title}"
            return "根据你的兴趣" if profile.reasons and is_chinese(profile.reasons[-1].label) else "Based on your interests"
        if source == "fresh":
            return "New arrival"
        return "Popular right now"
