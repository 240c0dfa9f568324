"""One ranking request, and what it leaves out.

The Ranker builds a ``RankRequest`` once per request (``Ranker.request``) and passes it from
stage to stage; nothing about a request is stored on the Ranker, so threads may rank on one
Ranker at once. What the request leaves out is one ``Exclusion``, asked by every candidate
source and the exploration pool: the final list is made of nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ecrec.retrieval.catalog import Item
from ecrec.retrieval.index import Filters
from ecrec.profiles.profile import UserProfile
from ecrec.profiles.profile_codec import item_key


@dataclass(frozen=True, eq=False)
class Exclusion:
    """The caller's ``exclude`` and the profile's dislikes, purchases and (with ``exclude_seen``)
    views, whether known by id or only by 32-bit key (``profile_codec``: past its byte budget a
    profile keeps old items as keys). A rebuyable item may come back after a purchase or a view;
    a dislike holds."""

    ids: frozenset[str]  # by id: the index drops these inside its search (Filters.exclude)
    by_key: Callable[[str], bool]  # the items the profile knows only by key

    def __call__(self, item_id: str) -> bool:
        return item_id in self.ids or self.by_key(item_id)


def exclusion(profile: UserProfile | None, items: dict[str, Item], exclude_seen: bool,
              exclude: frozenset[str] = frozenset()) -> Exclusion:
    def rebuyable(i: str) -> bool:
        return i in items and items[i].rebuyable

    ids = set(exclude)
    if profile is not None:
        ids.update(profile.disliked)
        ids.update(i for i in profile.purchased if not rebuyable(i))
        if exclude_seen:
            ids.update(i for i in profile.seen if not rebuyable(i))
    if profile is None or not (profile.disliked_keys or profile.bought_keys
                               or (exclude_seen and profile.seen_keys)):
        return Exclusion(frozenset(ids), _never)
    seen = profile.seen_keys if exclude_seen else {}

    def by_key(i: str) -> bool:
        k = item_key(i)
        if k in profile.disliked_keys:
            return True
        if rebuyable(i):
            return False
        return k in profile.bought_keys or k in seen
    return Exclusion(frozenset(ids), by_key)


def _never(item_id: str) -> bool:
    return False


@dataclass(frozen=True, eq=False)
class RankRequest:
    """One request as the ranker reads it; built by ``Ranker.request``."""

    profile: UserProfile | None
    k: int
    now: float
    filters: Filters  # the caller's, with ``excluded.ids`` as its exclude (what the index applies)
    excluded: Exclusion
    admitted: frozenset[str] | None  # ids passing the catalog part of ``filters``; None: every item
    text_vec: np.ndarray | None = None
    text: str | None = None
    seq_vec: object = None  # the sequence retriever's query (``Ranker.sequence_query``), or None
    covisit: dict = field(default_factory=dict)  # bought-together scores; read, never written

    def allows(self, item_id: str) -> bool:
        return (self.admitted is None or item_id in self.admitted) and not self.excluded(item_id)
