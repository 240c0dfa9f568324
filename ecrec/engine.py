"""The catalog engine: the catalog and everything that ranks from it, in one Ray-free object.

It holds the items, their FAISS ``VectorIndex``, the interaction counters (``ItemStats``), the
default ``Ranker`` and one per A/B arm, the lexical index with ``HybridSearch``, the guides and
articles (``ContentLibrary``) and the chat's product mentions. Recommendations (every source,
every arm), search, content for a shopper, a product page's related items, chat product lookups
and chat product answers all rank here. The in-process ``Recommender`` and the Serve graph's
retrievers (and an ingress replica's own catalog view) are thin users of it: they differ only in
how the catalog reaches them (``upsert_items`` after embedding, or an artifact plus the catalog
log's rows), so the tests can compare the graph with the in-process engine answer for answer.

Why one object with one lock: every answer reads several parts at once (content is ranked next to
the shopper's top products; search filters on the index's metadata; a chat lookup reads items and
vectors), and one sync of the catalog log changes several parts together. The rankers keep nothing
per request: the lock is there so a change applied from a sync thread is never half seen.

Answers are plain dicts (what the API returns, cheap to pickle from a retriever actor), except
``recommend``, which gives the ranker's ``Recommendation`` objects to in-process callers.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from ecrec.content.library import Content, ContentLibrary
from ecrec.profiles.profile import ProfileConfig
from ecrec.retrieval.catalog import Item
from ecrec.retrieval.index import Filters, VectorIndex, item_meta
from ecrec.retrieval.ranking import ItemStats, Ranker, RankingConfig, Recommendation
from ecrec.search.hybrid import HybridSearch, SearchConfig
from ecrec.search.lexical import LexicalIndex

CONTENT_SHOWN_PRODUCTS = 10  # content for a shopper is ranked next to their top this-many products


def without_price(filters: Filters | None) -> Filters | None:
    """The filters a chat product answer widens to when nothing meets a stated price: the same
    ones without the price (None when no price was stated: there is nothing to relax)."""
    if filters is None or (filters.min_price is None and filters.max_price is None):
        return None
    return dataclasses.replace(filters, min_price=None, max_price=None)


class CatalogEngine:
    def __init__(self, index: VectorIndex, items: Iterable[Item] = (), ranking: RankingConfig = RankingConfig(),
                 profile: ProfileConfig = ProfileConfig(), sequence=None, experiment=None,
                 search: SearchConfig = SearchConfig(), content: ContentLibrary | None = None):
        """``index`` already holds ``items``' vectors (an artifact's), or both start empty and
        ``upsert_items`` fills them. ``experiment``: an ``Experiment`` (one ranker per arm, over the
        same catalog and counters) or None. ``sequence``: the sequence retriever or None."""
        self.index = index
        self.items: dict[str, Item] = {it.id: it for it in items}
        self.stats = ItemStats()
        self.ranker = Ranker(index, self.items, self.stats, ranking, profile, sequence)
        self.rankers = {arm: Ranker(index, self.items, self.stats, experiment.config(arm, ranking), profile, sequence)
                        for arm in experiment.names} if experiment else {}
        self.lexical = LexicalIndex(self.items.values())
        self.searcher = HybridSearch(self.lexical, index, self.items, search)
        self.content = content if content is not None else ContentLibrary(index.dim)
        self.lock = threading.Lock()
        self.changes = 0  # item changes applied: what the page and mention caches are keyed by
        self._pages: dict[str, list[str]] = {}
        self._pages_key = self._mentions_key = None
        self._mentions = self._top_categories = None
        self.manifest: dict = {}  # the index artifact's manifest (``from_artifacts``), else empty
        self.content_manifest: dict = {}

    @classmethod
    def from_artifacts(cls, index_dir: str | Path, content_dir: str | Path, **kwargs) -> "CatalogEngine":
        """The engine over an index artifact and a content artifact as built (``kwargs``: as the
        constructor's); the catalog log's changes are applied on top (``apply_log``)."""
        from ecrec.retrieval.artifact import read_artifact

        items, index, manifest = read_artifact(index_dir)
        content, content_manifest = cls.read_content(content_dir, index.dim)
        engine = cls(index, items, content=content, **kwargs)
        engine.manifest, engine.content_manifest = manifest, content_manifest
        return engine

    @staticmethod
    def read_content(content_dir: str | Path, dim: int) -> tuple[ContentLibrary, dict]:
        from ecrec.content.artifact import read_content_artifact

        docs, x, manifest = read_content_artifact(content_dir)
        return ContentLibrary.build(docs, x, dim), manifest

    # ---- changes ---------------------------------------------------------------------------
    def upsert_items(self, items: list[Item], vectors: np.ndarray) -> None:
        """Add or replace items (``vectors``: their passage vectors, one row each)."""
        with self.lock:
            self._upsert(items, vectors)

    def remove_item(self, item_id: str) -> bool:
        """False when the item was not in the catalog."""
        with self.lock:
            return self._remove(item_id)

    def _upsert(self, items: list[Item], vectors: np.ndarray) -> None:
        self.index.upsert([it.id for it in items], vectors, [item_meta(it) for it in items])
        for it in items:
            self.items[it.id] = it
            self.lexical.upsert(it)
        self.changes += 1

    def _remove(self, item_id: str) -> bool:
        if item_id not in self.items:
            return False
        self.index.remove([item_id])
        del self.items[item_id]
        self.lexical.remove(item_id)
        self.changes += 1
        return True

    def apply_log(self, rows, covisit_pairs=(), counters: tuple | None = None) -> int | None:
        """One sync of the catalog log (``ecrec.retrieval.catalog_log``), all seen at once: item
        ``rows`` (seq, item id, item JSON or None for a delete, float32 vector bytes), co-visit pairs
        to merge, and the interaction counters (popularity, impressions, clicks) when they changed.
        Returns the last row's seq (None: no rows)."""
        last = None
        with self.lock:
            for seq, item_id, item_json, vec in rows:
                if item_json is None:
                    self._remove(item_id)
                else:
                    self._upsert([Item.model_validate_json(item_json)], np.frombuffer(vec, np.float32)[None, :])
                last = seq
            self.stats.covisits.merge(covisit_pairs)
            if counters is not None:
                self.stats.popularity, self.stats.impressions, self.stats.clicks = counters
                self.stats.version += 1
        return last

    def apply_content_log(self, rows, reload: tuple[ContentLibrary, dict] | None = None) -> int | None:
        """Guide/article ``rows`` of the content log (seq, id, document JSON or None, vector bytes),
        after ``reload`` (a library and its manifest: the content artifact read again, ``read_content``)
        replaced the library when given; returns the last row's seq (None: no rows)."""
        last = None
        with self.lock:
            if reload is not None:
                self.content, self.content_manifest = reload
            for seq, cid, doc_json, vec in rows:
                if doc_json is None:
                    if cid in self.content.docs:
                        self.content.remove(cid)
                else:
                    self.content.upsert(Content.model_validate_json(doc_json), np.frombuffer(vec, np.float32))
                last = seq
        return last

    def upsert_content(self, docs: list[Content], vectors: np.ndarray) -> None:
        with self.lock:
            for d, v in zip(docs, vectors):
                self.content.upsert(d, v)

    def note_interaction(self, item_id: str, weight: float, clicked: bool, covisit_from=None) -> None:
        """One item event in the counters (``ProfileConfig.interaction`` says weight and clicked);
        ``covisit_from``: the shopper's recent items before it, when it counts for co-visitation."""
        with self.lock:
            self.stats.interaction(item_id, weight)
            if clicked:
                self.stats.clicked(item_id)
            if covisit_from is not None:
                self.stats.covisits.add(item_id, list(covisit_from))

    def note_shown(self, item_ids) -> None:
        with self.lock:
            self.stats.shown(item_ids)

    # ---- answers ---------------------------------------------------------------------------
    def vector_of(self, item_id: str) -> np.ndarray | None:
        """The item's vector, or None when it is not in the catalog."""
        with self.lock:
            return self.index.vector(item_id) if item_id in self.index else None

    def get_item(self, item_id: str) -> Item | None:
        with self.lock:
            return self.items.get(item_id)

    def recommend(self, profile, k: int, now: float, filters: Filters | None = None, text_vec=None,
                  text: str | None = None, arm: str | None = None) -> list[Recommendation]:
        """The ranker's recommendations (``arm``: an A/B arm's settings; the default otherwise)."""
        with self.lock:
            return self.rankers.get(arm, self.ranker).recommend(profile, k, now, filters, text_vec, text)

    def rank(self, profile, k: int, filters, text_vec, text, now: float | None = None,
             arm: str | None = None) -> tuple[bool, list[dict]]:
        """(cold start?, the recommendations as dicts); ``profile``: a ``UserProfile`` or None."""
        with self.lock:
            return self._rank(profile, k, filters, text_vec, text, time.time() if now is None else now, arm)

    def _rank(self, profile, k, filters, text_vec, text, now, arm) -> tuple[bool, list[dict]]:
        recs = self.rankers.get(arm, self.ranker).recommend(profile, k, now, filters, text_vec, text)
        out = []
        for r in recs:
            it = self.items[r.item_id]
            out.append({"item_id": r.item_id, "title": it.title, "score": r.score, "source": r.source,
                        "reason": r.reason, "category": it.category, "price": it.price, "parts": r.parts})
        return profile is None or profile.is_cold, out

    def product_answer(self, profile, k: int, filters, text_vec, text, now: float | None = None,
                       arm: str | None = None) -> tuple[bool, list[dict], bool]:
        """A chat product question's items: (cold start?, items, relaxed?). When nothing meets a
        stated price, the nearest items without it (``without_price``), and relaxed is True so the
        reply can say so; both rankings see the same catalog and clock."""
        with self.lock:
            now = time.time() if now is None else now
            cold, items = self._rank(profile, k, filters, text_vec, text, now, arm)
            wider = without_price(filters) if not items else None
            if wider is not None:
                cold, items = self._rank(profile, k, wider, text_vec, text, now, arm)
        return cold, items, wider is not None

    def search(self, profile, query: str, vector, k: int, filters, now: float | None = None) -> list[dict]:
        """Hybrid search (``ecrec.search.hybrid``), re-ranked by ``profile`` when given."""
        with self.lock:
            hits = self.searcher.search(query, vector, k, filters, profile, time.time() if now is None else now)
            return [{"item_id": h.item_id, "title": self.items[h.item_id].title, "score": h.score,
                     "category": self.items[h.item_id].category, "price": self.items[h.item_id].price,
                     "parts": h.parts} for h in hits]

    def content_for(self, profile, k: int, language: str | None, explain: bool = False,
                    now: float | None = None) -> tuple[bool, list[dict]]:
        """(cold start?, guides and articles ranked by ``profile``), next to the shopper's top
        ``CONTENT_SHOWN_PRODUCTS`` products (the default ranker's) and naming their items by title."""
        with self.lock:
            titles = {i: self.items[i].title for i in (profile.recent_positive if profile else ()) if i in self.items}
            titles.update({i: self.items[i].title for i in (profile.purchased if profile else ()) if i in self.items})
            now = time.time() if now is None else now
            shown = ([(r.item_id, self.items[r.item_id].top_category)
                      for r in self.ranker.recommend(profile, CONTENT_SHOWN_PRODUCTS, now)]
                     if profile is not None and not profile.is_cold else [])
            hits = self.content.for_profile(profile, k, now, language, titles, shown)
            return profile is None or profile.is_cold, [self.content.hit_json(h, explain) for h in hits]

    def related(self, item_id: str, kind: str, k: int, language: str | None,
                explain: bool = False) -> list[dict] | None:
        """A product page's guides (``kind="content"``) or similar products; None: unknown item."""
        with self.lock:
            if item_id not in self.items:
                return None
            vec, item = self.index.vector(item_id), self.items[item_id]
            if kind == "content":
                return [self.content.hit_json(h, explain)
                        for h in self.content.related(item_id, vec, item.top_category, k, language)]
            return self.ranker.similar_to(item_id, k)

    def get_content(self, content_id: str) -> Content | None:
        with self.lock:
            return self.content.docs.get(content_id)

    def list_items(self, category: str | None, k: int, offset: int) -> tuple[int, list[dict]]:
        """(total, one page of items), by category, in catalog order."""
        with self.lock:
            if self._pages_key != self.changes or len(self._pages) > 256:
                self._pages, self._pages_key = {}, self.changes  # id lists per category, once per change
            ids = self._pages.get(category or "")
            if ids is None:
                ids = self._pages[category or ""] = [i for i, it in self.items.items()
                                                     if not category or it.top_category == category]
            return len(ids), [json.loads(self.items[i].model_dump_json()) for i in ids[offset: offset + k]]

    def chat_lookup(self, text: str, vector) -> tuple[dict | None, frozenset[str]]:
        """(the catalog item a chat message names, or None; the catalog's top categories)."""
        from ecrec.chat.products import ProductMentions, resolve

        with self.lock:
            if self._mentions_key != self.changes:  # rebuilt only when the catalog changed
                self._mentions = ProductMentions(self.items)
                self._top_categories = frozenset(it.top_category for it in self.items.values() if it.category)
                self._mentions_key = self.changes
            return resolve(text, vector, self._mentions, self.items, self.index.vector), self._top_categories
