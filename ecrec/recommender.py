"""The in-process engine: encoder -> sentiment -> profiles -> index -> ranking, in one object.

It is the reference the Ray Serve graph is tested against and what evaluation drives.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ecrec.retrieval.catalog import Item
from ecrec.text.encoder import EncoderConfig, TextEncoder, default_home, encode_cached
from ecrec.profiles.events import Event, check_timestamp
from ecrec.retrieval.index import Filters, ItemMeta, VectorIndex
from ecrec.profiles.profile import ProfileConfig, UserProfile
from ecrec.retrieval.ranking import ItemStats, Ranker, RankingConfig, Recommendation
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


def item_meta(item: Item) -> ItemMeta:
    return ItemMeta(item.top_category, item.price, item.stock)


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
        self.index = VectorIndex(analyzer.encoder.dim, config.index_factory)
        self.items: dict[str, Item] = {}
        self.stats = ItemStats()
        self.profiles: dict[str, UserProfile] = {}
        self.ranker = Ranker(self.index, self.items, self.stats, config.ranking, config.profile,
                             load_sequence(config.sequence_model, config.encoder.model))

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
        x = self.embed_items(items) if vectors is None else vectors
        self.index.upsert([it.id for it in items], x, [item_meta(it) for it in items])
        self.items.update({it.id: it for it in items})

    def remove_item(self, item_id: str) -> None:
        if item_id not in self.items:
            raise UnknownItemError(f"unknown item id {item_id!r}")
        self.index.remove([item_id])
        del self.items[item_id]

    # ---- events --------------------------------------------------------------------------
    def profile(self, user_id: str) -> UserProfile:
        return self.profiles.get(user_id) or UserProfile(user_id, self.index.dim)

    def analyze(self, event: Event) -> tuple[np.ndarray | None, TextAnalysis | None]:
        """What the profile update needs: the item's vector and the text's analysis."""
        item_vec = None
        if event.item_id is not None:
            if event.item_id not in self.items:
                raise UnknownItemError(f"unknown item id {event.item_id!r}")
            item_vec = self.index.vector(event.item_id)
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
        w = self.config.profile.item_weight(event.type)
        self.stats.interaction(event.item_id, w)
        if event.type in ("click", "cart", "purchase"):
            self.stats.clicked(event.item_id)
        if covisit_pair(event.item_id, recent_after):
            self.stats.covisits.add(event.item_id, list(recent_before))

    def record_impressions(self, user_id: str, item_ids: list[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.profiles[user_id] = self.profile(user_id).record_impressions(item_ids, now, self.config.profile)
        self.stats.shown(item_ids)

    def forget_user(self, user_id: str) -> None:
        self.profiles.pop(user_id, None)

    # ---- recommendations -----------------------------------------------------------------
    def recommend(self, user_id: str | None = None, k: int = 10, filters: Filters | None = None,
                  text: str | None = None, now: float | None = None) -> list[Recommendation]:
        """Top ``k`` for a user (known or not) and/or an ad-hoc text, with reasons."""
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        now = time.time() if now is None else now
        text_vec = None
        if text is not None:
            text = clean(text).text
            text_vec = self.analyzer.encoder.encode([text], "query")[0]
        profile = self.profiles.get(user_id) if user_id is not None else None
        return self.ranker.recommend(profile, k, now, filters, text_vec, text)
