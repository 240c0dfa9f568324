"""FAISS vector index over items: string ids, live add/update/remove, filters, save/load.

Every add gets a fresh FAISS id (monotonic), so updates never collide with graph-based indexes
(HNSW cannot delete): the old id is tombstoned and dropped from results, and the index is
rebuilt when tombstones pile up: off the request path, in a thread, with the same FAISS ids, then
swapped in (searches meanwhile use the old structure and skip its tombstones). A float32 copy of
the live vectors backs exact re-ranking, filtered fallbacks and rebuilds.

``choose_factory`` is the "auto" choice by catalog size, from ``bench/index_scale.py``;
``choose_colocation`` decides by the same size whether each profile shard holds a retriever.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

log = logging.getLogger(__name__)


AUTO_FLAT_MAX = 200_000  # exact search stays under ~15 ms per query up to here (one thread)
# A filter passing at most this many items (and at most 1/8 of the catalog) is searched exactly
# (numpy). Above it, FAISS is asked for k / share candidates and filtered after: at 1,000,000 items
# one category of ~25,000 took 2.1 s per recommendation that way (HNSW fetching thousands per
# query), and 37 ms with the exact scan (bench/ranking_scale.py, "ranking-scale-1m").
EXACT_FILTER_MAX = 100_000
ALLOWED_CACHE = 32  # filters whose passing ids are kept (per catalog version)
AUTO_COLOCATE_MAX_BYTES = 128 * 2**20  # one more index per shard is worth a hop up to here


def choose_factory(factory: str, n_items: int) -> str:
    """``factory`` as given, or for "auto": exact (Flat) up to ``AUTO_FLAT_MAX`` items, HNSW above
    (recall@100 >= 0.95 at >= 10x the exact QPS at 1M items: BENCHMARKS.md, index-scale)."""
    if factory != "auto":
        return factory
    return "Flat" if n_items <= AUTO_FLAT_MAX else "HNSW32"


def choose_colocation(setting: bool | None, n_items: int, dim: int) -> bool:
    """``setting`` as given, or for None ("auto"): a catalog view (index and ranker) inside each
    ingress replica, so GET recommendations ranks where it is received, with no actor hop
    (BENCHMARKS.md, serve), while the part of that view that grows with the catalog stays small:
    its vectors and the float32 copy behind them, at most ``AUTO_COLOCATE_MAX_BYTES`` (about 43k
    items at dim 384). The rest is a fixed cost per ingress replica (torch, the sequence model, the
    BM25 and content indexes: about 270 MB on the demo catalog); past the bound a retriever actor
    ranks instead."""
    if setting is not None:
        return setting
    return 2 * 4 * dim * n_items <= AUTO_COLOCATE_MAX_BYTES


@dataclass(frozen=True)
class Filters:
    """Restrict search results. ``None`` means no constraint."""

    categories: frozenset[str] | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool = False
    exclude: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("min_price", "max_price"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price {self.min_price} > max_price {self.max_price}")

    def admits(self, item_id: str, meta: "ItemMeta") -> bool:
        return self.admits_meta(meta) and item_id not in self.exclude

    def admits_meta(self, meta: "ItemMeta") -> bool:
        """The catalog part of the filter (everything but ``exclude``)."""
        return ((self.categories is None or meta.category in self.categories)
                and (self.min_price is None or meta.price >= self.min_price)
                and (self.max_price is None or meta.price <= self.max_price)
                and (not self.in_stock or meta.stock > 0))

    @property
    def catalog_key(self) -> tuple | None:
        """What the catalog part depends on; None when it admits every item."""
        key = (self.categories, self.min_price, self.max_price, self.in_stock)
        return None if key == (None, None, None, False) else key


@dataclass(frozen=True)
class ItemMeta:
    category: str
    price: float
    stock: int


def item_meta(item) -> ItemMeta:
    """What the index filters an ``Item`` by: its top category, price and stock."""
    return ItemMeta(item.top_category, item.price, item.stock)


@dataclass
class Passing:
    """The items one filter admits, as of one catalog version (exclusions apart)."""

    version: int
    ids: list[str]
    members: frozenset[str]
    matrix: np.ndarray | None = None  # their vectors, stacked on first exact search


def check_vectors(x: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinity")
    return np.ascontiguousarray(x)


class VectorIndex:
    """Inner-product index keyed by item id. ``factory`` is a FAISS index-factory string."""

    def __init__(self, dim: int, factory: str = "Flat", hnsw_ef_search: int = 256, background_rebuild: bool = True):
        self.dim, self.factory, self.hnsw_ef_search = dim, factory, hnsw_ef_search
        self.background_rebuild = background_rebuild
        self._swap = threading.Lock()  # mutations vs. the swap of a rebuilt structure
        self._rebuilding: threading.Thread | None = None
        self._index = self._new_index()
        self._next_fid = 0
        self._fid_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._vec: dict[str, np.ndarray] = {}
        self.meta: dict[str, ItemMeta] = {}
        self._dead = 0
        self._by_category: dict[str, dict[str, None]] = {}  # category -> ids (an ordered set)
        self._meta_version = 0  # bumped by every upsert/remove: invalidates cached filters
        self._passing: dict[tuple, Passing] = {}

    def _new_index(self) -> faiss.Index:
        base = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        if hasattr(base, "hnsw"):
            base.hnsw.efSearch = self.hnsw_ef_search
        return faiss.IndexIDMap2(base) if "IDMap" not in self.factory else base

    def __len__(self) -> int:
        return len(self._fid_of)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._fid_of

    @property
    def version(self) -> int:
        """Changes with every upsert or remove (what cached catalog orders are keyed on)."""
        return self._meta_version

    @property
    def ids(self) -> list[str]:
        return list(self._fid_of)

    def vector(self, item_id: str) -> np.ndarray:
        if item_id not in self._vec:
            raise KeyError(f"unknown item id {item_id!r}")
        return self._vec[item_id]

    def train(self, x: np.ndarray) -> None:
        """IVF/PQ factories need training on a sample before the first add."""
        x = check_vectors(x, self.dim)
        if not self._index.is_trained:
            self._index.train(x)

    def upsert(self, ids: Sequence[str], x: np.ndarray, meta: Sequence[ItemMeta]) -> None:
        """Add new items or replace existing ones (all-or-nothing on bad input)."""
        x = check_vectors(x, self.dim)
        if len(ids) != len(x) or len(meta) != len(x):
            raise ValueError(f"{len(ids)} ids, {len(meta)} metas and {len(x)} vectors differ")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids in one upsert")
        if not self._index.is_trained:
            self.train(x)
        with self._swap:
            fids = np.arange(self._next_fid, self._next_fid + len(ids), dtype=np.int64)
            self._forget([i for i in ids if i in self._fid_of])
            self._index.add_with_ids(x, fids)
            self._next_fid += len(ids)
            for item_id, fid, v, m in zip(ids, fids.tolist(), x, meta):
                self._fid_of[item_id], self._id_of[fid] = fid, item_id
                self._uncategorise(item_id)
                self._vec[item_id], self.meta[item_id] = v.copy(), m
                self._by_category.setdefault(m.category, {})[item_id] = None
            self._meta_version += 1
        self._maybe_rebuild()

    def remove(self, ids: Sequence[str]) -> None:
        missing = [i for i in ids if i not in self._fid_of]
        if missing:
            raise KeyError(f"unknown item ids: {missing[:5]}")
        with self._swap:
            self._forget(list(ids))
            for i in ids:
                self._uncategorise(i)
                del self._vec[i], self.meta[i]
            self._meta_version += 1
        self._maybe_rebuild()

    def _uncategorise(self, item_id: str) -> None:
        old = self.meta.get(item_id)
        if old is not None:
            members = self._by_category.get(old.category, {})
            members.pop(item_id, None)
            if not members:
                self._by_category.pop(old.category, None)

    def _forget(self, ids: list[str]) -> None:
        fids = [self._fid_of.pop(i) for i in ids]
        for f in fids:
            del self._id_of[f]
        if not fids:
            return
        try:
            self._index.remove_ids(np.asarray(fids, dtype=np.int64))
        except RuntimeError:  # HNSW: no removal; leave a tombstone (ids unmapped above)
            self._dead += len(fids)

    def _maybe_rebuild(self) -> None:
        if self._dead > max(1000, len(self)):
            if not self.background_rebuild:
                self.rebuild()
            elif self._rebuilding is None or not self._rebuilding.is_alive():
                self._rebuilding = threading.Thread(target=self._rebuild_and_swap, name="index-rebuild", daemon=True)
                self._rebuilding.start()

    def wait_rebuild(self, timeout: float | None = None) -> None:
        t = self._rebuilding
        if t is not None:
            t.join(timeout)

    def _rebuild_and_swap(self) -> None:
        """A new structure over the live vectors with their FAISS ids, built without the lock;
        what changed meanwhile is added before the swap (removed ids are already unmapped)."""
        with self._swap:
            fids = dict(self._id_of)  # fid -> id, as of now
            x = np.stack([self._vec[i] for i in fids.values()]) if fids else None
        new = self._new_index()
        if x is not None:
            if not new.is_trained:
                new.train(x)
            new.add_with_ids(x, np.fromiter(fids, dtype=np.int64, count=len(fids)))
        with self._swap:
            added = [f for f in self._id_of if f not in fids]
            if added:
                new.add_with_ids(np.stack([self._vec[self._id_of[f]] for f in added]), np.asarray(added, np.int64))
            gone = sum(f not in self._id_of for f in fids)
            try:
                if gone:
                    new.remove_ids(np.asarray([f for f in fids if f not in self._id_of], np.int64))
                    gone = 0
            except RuntimeError:  # HNSW: tombstones again, far fewer
                pass
            self._index, self._dead = new, gone
        log.info("index rebuilt off the request path: %d live items, %d tombstones", len(self._id_of), gone)

    def rebuild(self) -> None:
        ids = self.ids
        x = np.stack([self._vec[i] for i in ids]) if ids else np.zeros((0, self.dim), np.float32)
        meta = [self.meta[i] for i in ids]
        self.__init__(self.dim, self.factory, self.hnsw_ef_search, self.background_rebuild)
        if ids:
            self.upsert(ids, x, meta)

    def allowed(self, filters: Filters | None) -> frozenset[str] | None:
        """Ids passing the catalog part of ``filters`` (exclusions are the caller's); ``None`` when
        it admits every item. Cached per filter until the catalog changes, and a category filter
        reads only its categories' members: per request this costs nothing that grows with the
        catalog."""
        passing = self._passing_for(filters)
        return None if passing is None else passing.members

    def _passing_for(self, filters: Filters | None) -> Passing | None:
        key = None if filters is None else filters.catalog_key
        if key is None:
            return None
        hit = self._passing.get(key)
        if hit is not None and hit.version == self._meta_version:
            return hit
        with self._swap:
            if filters.categories is not None:
                pool = (i for c in sorted(filters.categories) for i in self._by_category.get(c, ()))
            else:  # price or stock alone: one scan per catalog version, then cached
                pool = iter(self.meta)
            ids = [i for i in pool if filters.admits_meta(self.meta[i])]
            passing = Passing(self._meta_version, ids, frozenset(ids))
            self._passing.pop(key, None)
            self._passing[key] = passing
            while len(self._passing) > ALLOWED_CACHE:
                self._passing.pop(next(iter(self._passing)))
        return passing

    def search(self, query: np.ndarray, k: int, filters: Filters | None = None) -> list[tuple[str, float]]:
        """Top ``k`` (item id, inner product) for one query vector, best first.

        Returns ``min(k, items passing filters)`` results: a selective filter is served by an
        exact scan of the allowed items; otherwise FAISS is asked for more until k survive.
        """
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = check_vectors(query, self.dim, "query")
        if q.shape[0] != 1:
            raise ValueError("search takes one query vector; use search_many for several")
        passing = self._passing_for(filters)
        exclude = filters.exclude if filters is not None else frozenset()
        if self._scan_exactly(passing, k):
            return self._exact(q[0], passing, k, exclude)
        ok = None if passing is None else passing.members
        fetch = min(len(self) + self._dead, max(2 * k, k + 16) + len(exclude))
        while True:
            scores, fids = self._index.search(q, fetch)  # (a swap replaces the reference, never mutates it)
            hits = [(self._id_of[f], float(s)) for f, s in zip(fids[0], scores[0])
                    if f >= 0 and f in self._id_of and (ok is None or self._id_of[f] in ok)
                    and self._id_of[f] not in exclude]
            if len(hits) >= k or fetch >= len(self) + self._dead:
                return hits[:k]
            fetch = min(len(self) + self._dead, fetch * 4)

    def search_many(self, queries: np.ndarray, ks: Sequence[int],
                    filters: Filters | None = None) -> list[list[tuple[str, float]]]:
        """``search`` for several queries at once (one FAISS call: an exact index reads the
        catalog once instead of once per query); each row's result equals ``search(row, k)``."""
        Q = check_vectors(queries, self.dim, "queries")
        if len(ks) != len(Q) or any(not isinstance(k, (int, np.integer)) or k <= 0 for k in ks):
            raise ValueError(f"need one positive k per query, got {list(ks)!r} for {len(Q)} queries")
        if not len(Q):
            return []
        passing = self._passing_for(filters)
        exclude = filters.exclude if filters is not None else frozenset()
        if self._scan_exactly(passing, max(ks)):
            return [self._exact(q, passing, k, exclude) for q, k in zip(Q, ks)]
        ok = None if passing is None else passing.members
        total = len(self) + self._dead
        fetch = min(total, max(max(2 * k, k + 16) for k in ks) + len(exclude))
        scores, fids = self._index.search(Q, fetch)
        out, id_of = [], self._id_of
        for q, k, srow, frow in zip(Q, ks, scores.tolist(), fids.tolist()):
            hits = []  # (one dict lookup per hit, plain Python numbers: this loop runs per request)
            for f, s in zip(frow, srow):
                i = id_of.get(f) if f >= 0 else None
                if i is not None and (ok is None or i in ok) and i not in exclude:
                    hits.append((i, s))
                    if len(hits) == k:
                        break
            out.append(hits if len(hits) >= k or fetch >= total else self.search(q, k, filters))
        return out

    def _scan_exactly(self, passing: Passing | None, k: int) -> bool:
        """Whether a filter's passing items are few enough to scan exactly (see EXACT_FILTER_MAX)."""
        return passing is not None and len(passing.ids) <= max(4 * k, min(len(self) // 8, EXACT_FILTER_MAX))

    def _exact(self, q: np.ndarray, passing: Passing, k: int, exclude) -> list[tuple[str, float]]:
        ids, x = passing.ids, passing.matrix
        if x is None:
            with self._swap:
                live = [i for i in ids if i in self._vec]  # all of them, unless the catalog just changed
                x = np.stack([self._vec[i] for i in live]) if live else np.zeros((0, self.dim), np.float32)
            if len(live) == len(ids):
                passing.matrix = x  # stacked once per filter and catalog version
            ids = live
        s = x @ q
        want = k + len(exclude)
        if want < len(s):  # only the best ``want`` (and any tied with the last) are sorted, as a full sort would
            cut = s[np.argpartition(-s, want - 1)[want - 1]]
            top = np.flatnonzero(s >= cut)
            order = top[np.lexsort((top, -s[top]))]
        else:
            order = np.argsort(-s, kind="stable")
        out = []
        for t in order:
            if ids[t] not in exclude:
                out.append((ids[t], float(s[t])))
                if len(out) == k:
                    break
        return out

    def save(self, directory: str | Path) -> None:
        """Vectors, ids and metadata; for graph and quantised factories also the FAISS structure
        itself (with its ids), so loading a 1M-item HNSW reads it instead of rebuilding it."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with self._swap:
            ids = self.ids
            np.save(d / "vectors.npy", np.stack([self._vec[i] for i in ids]) if ids else
                    np.zeros((0, self.dim), np.float32))
            meta = {i: [self.meta[i].category, self.meta[i].price, self.meta[i].stock] for i in ids}
            info = {"dim": self.dim, "factory": self.factory, "ids": ids, "meta": meta}
            if self.factory != "Flat" and ids:
                faiss.write_index(self._index, str(d / "faiss.index"))
                info.update(fids=[self._fid_of[i] for i in ids], dead=self._dead, next_fid=self._next_fid)
        (d / "index.json").write_text(json.dumps(info, ensure_ascii=False))

    @classmethod
    def load(cls, directory: str | Path) -> "VectorIndex":
        """Load vectors + ids, and the saved FAISS structure when there is one (else rebuild it:
        fast for Flat)."""
        d = Path(directory)
        info = json.loads((d / "index.json").read_text())
        index = cls(info["dim"], info["factory"])
        x = np.load(d / "vectors.npy")
        if not info["ids"]:
            return index
        if "fids" in info and (d / "faiss.index").exists():
            index._index = faiss.read_index(str(d / "faiss.index"))
            if hasattr(faiss.downcast_index(index._index.index), "hnsw"):
                faiss.downcast_index(index._index.index).hnsw.efSearch = index.hnsw_ef_search
            for item_id, fid, v in zip(info["ids"], info["fids"], x):
                index._fid_of[item_id], index._id_of[fid] = fid, item_id
                index._vec[item_id], index.meta[item_id] = v, ItemMeta(*info["meta"][item_id])
                index._by_category.setdefault(index.meta[item_id].category, {})[item_id] = None
            index._next_fid, index._dead = info["next_fid"], info["dead"]
            return index
        index.upsert(info["ids"], x, [ItemMeta(*info["meta"][i]) for i in info["ids"]])
        return index
