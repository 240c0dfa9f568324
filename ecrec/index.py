"""FAISS vector index over items: string ids, live add/update/remove, filters, save/load.

Every add gets a fresh FAISS id (monotonic), so updates never collide with graph-based indexes
(HNSW cannot delete): the old id is tombstoned and dropped from results, and the index is
rebuilt when tombstones pile up: off the request path, in a thread, with the same FAISS ids, then
swapped in (searches meanwhile use the old structure and skip its tombstones). A float32 copy of
the live vectors backs exact re-ranking, filtered fallbacks and rebuilds.

``choose_factory`` is the "auto" choice by catalog size, from ``bench/index_scale.py``.
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


def choose_factory(factory: str, n_items: int) -> str:
    """``factory`` as given, or for "auto": exact (Flat) up to ``AUTO_FLAT_MAX`` items, HNSW above
    (recall@100 >= 0.95 at >= 10x the exact QPS at 1M items: BENCHMARKS.md, index-scale)."""
    if factory != "auto":
        return factory
    return "Flat" if n_items <= AUTO_FLAT_MAX else "HNSW32"


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
        return ((self.categories is None or meta.category in self.categories)
                and (self.min_price is None or meta.price >= self.min_price)
                and (self.max_price is None or meta.price <= self.max_price)
                and (not self.in_stock or meta.stock > 0) and item_id not in self.exclude)


@dataclass(frozen=True)
class ItemMeta:
    category: str
    price: float
    stock: int


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
                self._vec[item_id], self.meta[item_id] = v.copy(), m
        self._maybe_rebuild()

    def remove(self, ids: Sequence[str]) -> None:
        missing = [i for i in ids if i not in self._fid_of]
        if missing:
            raise KeyError(f"unknown item ids: {missing[:5]}")
        with self._swap:
            self._forget(list(ids))
            for i in ids:
                del self._vec[i], self.meta[i]
        self._maybe_rebuild()

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

    def allowed(self, filters: Filters | None) -> list[str] | None:
        """Ids passing ``filters``; ``None`` when only exclusions (or nothing) are set: those are
        checked on the results, so a long exclude list never costs a scan of the catalog."""
        if filters is None or Filters(exclude=filters.exclude) == filters:
            return None
        return [i for i, m in self.meta.items() if filters.admits(i, m)]

    def search(self, query: np.ndarray, k: int, filters: Filters | None = None) -> list[tuple[str, float]]:
        """Top ``k`` (item id, inner product) for one query vector, best first.

        Returns ``min(k, items passing filters)`` results: a selective filter is served by an
        exact scan of the allowed items; otherwise FAISS is asked for more until k survive.
        """
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = check_vectors(query, self.dim, "query")
        if q.shape[0] != 1:
            raise ValueError("search takes one query vector; use search_batch for many")
        allowed = self.allowed(filters)
        exclude = filters.exclude if filters is not None else frozenset()
        if allowed is not None and len(allowed) <= max(4 * k, len(self) // 8):
            return self._exact(q[0], allowed, k)
        ok = None if allowed is None else set(allowed)
        fetch = min(len(self) + self._dead, max(2 * k, k + 16) + len(exclude))
        while True:
            scores, fids = self._index.search(q, fetch)  # (a swap replaces the reference, never mutates it)
            hits = [(self._id_of[f], float(s)) for f, s in zip(fids[0], scores[0])
                    if f >= 0 and f in self._id_of and (ok is None or self._id_of[f] in ok)
                    and self._id_of[f] not in exclude]
            if len(hits) >= k or fetch >= len(self) + self._dead:
                return hits[:k]
            fetch = min(len(self) + self._dead, fetch * 4)

    def _exact(self, q: np.ndarray, ids: list[str], k: int) -> list[tuple[str, float]]:
        if not ids:
            return []
        x = np.stack([self._vec[i] for i in ids])
        s = x @ q
        top = np.argsort(-s, kind="stable")[:k]
        return [(ids[t], float(s[t])) for t in top]

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
            index._next_fid, index._dead = info["next_fid"], info["dead"]
            return index
        index.upsert(info["ids"], x, [ItemMeta(*info["meta"][i]) for i in info["ids"]])
        return index
