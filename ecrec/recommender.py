"""The in-process engine: encoder -> sentiment -> profiles -> catalog engine, in one object.

It is the reference the Ray Serve graph is tested against and what evaluation drives. Everything
that ranks from the catalog (recommendations, search, content, related items, chat product
answers) is the ``CatalogEngine`` the graph's retrievers use too; this object adds what the graph
spreads over other actors: the encoder, the profiles (in a dict, not shards) and the counters'
updates (applied at once, not through the catalog board).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ecrec.content.library import Content
from ecrec.engine import CatalogEngine
from ecrec.retrieval.catalog import Item
from ecrec.search.hybrid import SearchConfig
from ecrec.text.encoder import EncoderConfig, TextEncoder, default_home, encode_cached
from ecrec.profiles.events import Event, check_timestamp
from ecrec.retrieval.index import Filters, VectorIndex, item_meta  # noqa: F401 (item_meta: re-exported)
from ecrec.profiles.profile import ProfileConfig, UserProfile
from ecrec.retrieval.ranking import RankingConfig, Recommendation
from ecrec.text.sentiment import TextAnalysis, TextAnalyzer, head_path, intent_head_path, load_head
from ecrec.text.prepare import clean

log = logging.getLogger(__name__)


class UnknownItemError(KeyError):
    """An event or request names an item the catalog does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class RecommenderConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    index_factory: str = "Flat"
    sentiment_head: Path | str | None = None  # None: shipped branch (else probe); 'probe'; or a path
    intent_head: Path | str | None = None  # None: shipped intent branch if any; 'none'; or a path
    sequence_model: Path | str | None = None  # None: shipped sequence retriever if any; 'none'; or a path


@dataclass(frozen=True)
class IngestResult:
    user_id: str
    profile_version: int
    analysis: TextAnalysis | None


def covisit_pair(item_id: str, recent_after) -> bool:
    """An event counts for co-visitation when the profile took the item as a positive one."""
    return bool(recent_after) and recent_after[-1] == item_id


def load_sequence(choice: Path | str | None, model: str = "e5-small"):
    """The sequence retriever for ``choice`` (see ``RecommenderConfig.sequence_model``), or None."""
    from ecrec.retrieval.sequence import load_sequence_model, shipped_sequence_path

    if choice == "none":
        return None
    path = shipped_sequence_path(model) if choice is None else Path(choice)
    if choice is None and not path.exists():
        return None
    return load_sequence_model(path)[0]


def load_analyzer(config: RecommenderConfig, home: Path | None = None) -> TextAnalyzer:
    encoder = TextEncoder(config.encoder, home)
    head = load_head(head_path(config.sentiment_head, config.encoder.model), encoder)
    intent = intent_head_path(config.intent_head, config.encoder.model)
    return TextAnalyzer(encoder, head, load_head(intent, encoder) if intent else None)


class Recommender:
    def __init__(self, analyzer: TextAnalyzer, config: RecommenderConfig = RecommenderConfig(),
                 cache_dir: Path | None = None):
        self.analyzer, self.config, self.cache_dir = analyzer, config, cache_dir
        self.engine = CatalogEngine(VectorIndex(analyzer.encoder.dim, config.index_factory), (), config.ranking,
                                    config.profile, load_sequence(config.sequence_model, config.encoder.model),
                                    search=config.search)
        # the engine's parts, under the names callers have always used (the same objects)
        self.index, self.items, self.stats, self.ranker = (self.engine.index, self.engine.items, self.engine.stats,
                                                           self.engine.ranker)
        self.profiles: dict[str, UserProfile] = {}

    @classmethod
    def from_catalog(cls, items: Iterable[Item], config: RecommenderConfig = RecommenderConfig(),
                     home: Path | None = None) -> "Recommender":
        home = home or default_home()
        rec = cls(load_analyzer(config, home), config, cache_dir=home / "cache")
        rec.add_items(list(items))
        return rec

    # ---- catalog -------------------------------------------------------------------------
    def embed_items(self, items: list[Item]) -> np.ndarray:
        return encode_cached(self.analyzer.encoder, [it.embedding_text() for it in items],
                             "passage", self.cache_dir)

    def add_items(self, items: list[Item], vectors: np.ndarray | None = None) -> None:
        """Add or replace items; they are retrievable as soon as this returns."""
        items = [it if isinstance(it, Item) else Item(**it) for it in items]
        if not items:
            return
        self.engine.upsert_items(items, self.embed_items(items) if vectors is None else vectors)

    def remove_item(self, item_id: str) -> None:
        if not self.engine.remove_item(item_id):
            raise UnknownItemError(f"unknown item id {item_id!r}")

    def add_content(self, docs: list[Content], vectors: np.ndarray | None = None) -> None:
        """Add or replace guides and articles, embedded as the content artifact embeds them."""
        if docs:
            self.engine.upsert_content(docs, encode_cached(self.analyzer.encoder, [d.embedding_text() for d in docs],
                                                           "passage", self.cache_dir) if vectors is None else vectors)

    # ---- events --------------------------------------------------------------------------
    def profile(self, user_id: str) -> UserProfile:
        return self.profiles.get(user_id) or UserProfile(user_id, self.index.dim)

    def analyze(self, event: Event) -> tuple[np.ndarray | None, TextAnalysis | None]:
        """What the profile update needs: the item's vector and the text's analysis."""
        item_vec = None
        if event.item_id is not None:
            item_vec = self.engine.vector_of(event.item_id)
            if item_vec is None:
                raise UnknownItemError(f"unknown item id {event.item_id!r}")
        analysis = self.analyzer.analyze([event.text])[0] if event.text is not None else None
        return item_vec, analysis

    def ingest(self, event: Event | dict) -> IngestResult:
        """Apply one event; on any error nothing changes."""
        event = event if isinstance(event, Event) else Event(**event)
        check_timestamp(event.ts, time.time(), self.config.profile.max_future_skew_s)
        item_vec, analysis = self.analyze(event)
        old = self.profile(event.user_id)
        new = old.apply(event, item_vec, analysis, self.config.profile)
        self.profiles[event.user_id] = new
        self.note_interaction(event, old.recent, new.recent)
        return IngestResult(event.user_id, new.version, analysis)

    def note_interaction(self, event: Event, recent_before: list[str] = (), recent_after: list[str] = ()) -> None:
        if event.item_id is None:
            return
        weight, clicked = self.config.profile.interaction(event.type)
        self.engine.note_interaction(event.item_id, weight, clicked,
                                     recent_before if covisit_pair(event.item_id, recent_after) else None)

    def record_impressions(self, user_id: str, item_ids: list[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.profiles[user_id] = self.profile(user_id).record_impressions(item_ids, now, self.config.profile)
        self.engine.note_shown(item_ids)

    def forget_user(self, user_id: str) -> None:
        self.profiles.pop(user_id, None)

    # ---- answers -------------------------------------------------------------------------
    def _query(self, text: str | None) -> tuple[str | None, np.ndarray | None]:
        """A shopper's text as the ranking reads it: cleaned, and its query vector."""
        if text is None:
            return None, None
        text = clean(text).text
        return text, self.analyzer.encoder.encode([text], "query")[0]

    def recommend(self, user_id: str | None = None, k: int = 10, filters: Filters | None = None,
                  text: str | None = None, now: float | None = None) -> list[Recommendation]:
        """Top ``k`` for a user (known or not) and/or an ad-hoc text, with reasons."""
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        now = time.time() if now is None else now
        text, text_vec = self._query(text)
        profile = self.profiles.get(user_id) if user_id is not None else None
        return self.engine.recommend(profile, k, now, filters, text_vec, text)

    def search(self, query: str, user_id: str | None = None, k: int = 10, filters: Filters | None = None,
               now: float | None = None) -> list[dict]:
        """Hybrid search for ``query`` (re-ranked by the user's profile when known), as the API's
        ``POST /v1/search`` ranks it (before the query becomes the user's search event)."""
        query, vector = self._query(query)
        return self.engine.search(self.profiles.get(user_id) if user_id else None, query, vector, k, filters, now)

    def content_for(self, user_id: str | None, k: int = 10, language: str | None = None, explain: bool = False,
                    now: float | None = None) -> tuple[bool, list[dict]]:
        """(cold start?, guides and articles for the user), as ``GET /v1/users/{id}/content``."""
        return self.engine.content_for(self.profiles.get(user_id) if user_id else None, k, language, explain, now)

    def related(self, item_id: str, kind: str = "products", k: int = 10, language: str | None = None,
                explain: bool = False) -> list[dict] | None:
        return self.engine.related(item_id, kind, k, language, explain)

    def product_answer(self, user_id: str | None, text: str, k: int = 5, filters: Filters | None = None,
                       now: float | None = None) -> tuple[list[dict], bool]:
        """A chat product question's items and whether a price nobody met was dropped
        (``CatalogEngine.product_answer``)."""
        text, text_vec = self._query(text)
        _, items, relaxed = self.engine.product_answer(self.profiles.get(user_id) if user_id else None, k, filters,
                                                       text_vec, text, now)
        return items, relaxed
