"""The catalog board: one durable log of item changes and interaction counters.

The ingress writes item upserts/deletes here (acknowledged once in SQLite); every retriever
replica pulls ``sync(seq)`` every ``sync_interval_s`` (0.2 s by default) and applies what it has
not seen, so a change reaches all replicas within a second, and a new replica catches up by
loading the index artifact and replaying the log from 0.
"""
from __future__ import annotations

import json
import sqlite3
import threading

import numpy as np
import ray

from deployments.config import AppArgs


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3, max_concurrency=8)
class CatalogBoard:
    def __init__(self, path: str):
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "item_id TEXT NOT NULL, item TEXT, vector BLOB)")
        self._lock = threading.Lock()
        self.popularity: dict[str, float] = {}
        self.impressions: dict[str, int] = {}
        self.clicks: dict[str, int] = {}
        self.stats_version = 0
        # co-visit pairs in arrival order; replicas pull what they have not seen (a delta, not
        # the whole table). In memory like the counters above: rebuilt from traffic after a restart.
        self.covisits: list[tuple[str, list[str]]] = []

    def put(self, item_json: str, vector: np.ndarray) -> int:
        item_id = json.loads(item_json)["id"]
        with self._lock:
            cur = self._db.execute("INSERT INTO changes (item_id, item, vector) VALUES (?, ?, ?)",
                                   (item_id, item_json, np.asarray(vector, np.float32).tobytes()))
            return int(cur.lastrowid)

    def delete(self, item_id: str) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO changes (item_id, item, vector) VALUES (?, NULL, NULL)",
                                   (item_id,))
            return int(cur.lastrowid)

    def note(self, interactions: list[tuple[str, float, bool, tuple | None]], shown: list[str]) -> None:
        for item_id, weight, click, covisit in interactions:
            if covisit is not None:
                self.covisits.append(covisit)
            self.popularity[item_id] = self.popularity.get(item_id, 0.0) + max(weight, 0.0)
            if click:
                self.clicks[item_id] = self.clicks.get(item_id, 0) + 1
        for item_id in shown:
            self.impressions[item_id] = self.impressions.get(item_id, 0) + 1
        self.stats_version += 1

    def sync(self, seq: int, stats_version: int, covisit_pos: int = 0):
        """(item changes after ``seq``, counters if they changed, co-visit pairs from ``covisit_pos``)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, item_id, item, vector FROM changes WHERE seq > ? ORDER BY seq",
                                    (seq,)).fetchall()
        stats = None
        if stats_version != self.stats_version:
            stats = (self.stats_version, dict(self.popularity), dict(self.impressions), dict(self.clicks))
        if covisit_pos > len(self.covisits):  # the board restarted: start over
            covisit_pos = 0
        return rows, stats, (covisit_pos, self.covisits[covisit_pos:])

    def last_seq(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]


def get_board(args: AppArgs):
    state = args.resolved_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    return CatalogBoard.options(name="ecrec-catalog-board", namespace=args.namespace, lifetime="detached",
                                get_if_exists=True).remote(str(state / "catalog.db"))
