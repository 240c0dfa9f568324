"""The durable log behind the catalog board (SQLite, WAL, ``synchronous=FULL``).

What it keeps, and why:

- **Item changes** (upserts with their vector, deletes), in ``seq`` order. Compacted to the
  newest row per item: a replica replaying from any ``seq`` still ends in the same state.
- **Counters** (popularity, impressions, clicks per item), durable: a restart loses none.
- **Co-visits** (an item and the shopper's prior recent items), the newest ``max_covisits``
  pairs; replicas pull what they have not seen by position.
- **An epoch**, random per database: ``seq`` and positions only mean something within one. A
  board that comes back on an empty database has a new epoch, and replicas that knew the old one
  start over from the index artifact instead of silently drifting.
- **The artifact id** the log was last applied on. The log holds operators' item edits, which
  stay valid on a rebuilt artifact of the same model (``ensure_artifact`` and the state layout
  refuse a model change), so a new artifact is recorded and the edits replay on top of it.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid

import numpy as np

from ecrec.profiles.store import transaction

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL,
                                    item TEXT, vector BLOB);
CREATE INDEX IF NOT EXISTS changes_item ON changes (item_id, seq);
CREATE TABLE IF NOT EXISTS counters (item_id TEXT PRIMARY KEY, popularity REAL NOT NULL DEFAULT 0,
                                     impressions INTEGER NOT NULL DEFAULT 0, clicks INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS covisits (pos INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL,
                                     recent TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class CatalogLog:
    def __init__(self, path: str, max_covisits: int = 200_000, compact_every: int = 500,
                 sync_batch: int = 5000):
        self.max_covisits, self.compact_every, self.sync_batch = max_covisits, compact_every, sync_batch
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self.epoch = self._meta("epoch") or self._set_meta("epoch", uuid.uuid4().hex)
        self.artifact_id = self._meta("artifact_id")
        self.stats_version = int(self._meta("stats_version") or 0)
        self.popularity: dict[str, float] = {}
        self.impressions: dict[str, int] = {}
        self.clicks: dict[str, int] = {}
        for item_id, pop, imp, clk in self._db.execute("SELECT * FROM counters"):
            if pop:
                self.popularity[item_id] = pop
            if imp:
                self.impressions[item_id] = imp
            if clk:
                self.clicks[item_id] = clk
        self._writes = 0
        self.compact()

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> str:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        return value

    def _tx(self, fn):
        return transaction(self._db, self._lock, fn)

    # ---- item changes ------------------------------------------------------------------
    def put(self, item_json: str, vector: np.ndarray) -> int:
        item_id = json.loads(item_json)["id"]
        vec = np.asarray(vector, np.float32).tobytes()
        seq = self._tx(lambda db: int(db.execute("INSERT INTO changes (item_id, item, vector) VALUES (?, ?, ?)",
                                                 (item_id, item_json, vec)).lastrowid))
        self._after_write()
        return seq

    def delete(self, item_id: str) -> int:
        seq = self._tx(lambda db: int(db.execute("INSERT INTO changes (item_id, item, vector) VALUES (?, NULL, NULL)",
                                                 (item_id,)).lastrowid))
        self._after_write()
        return seq

    def _after_write(self) -> None:
        self._writes += 1
        if self._writes % self.compact_every == 0:
            self.compact()

    def compact(self) -> int:
        """Drop item changes superseded by a later change of the same item, and co-visits past
        the newest ``max_covisits``. Returns the rows dropped."""
        def run(db):
            n = db.execute("DELETE FROM changes WHERE seq NOT IN (SELECT MAX(seq) FROM changes GROUP BY item_id)"
                           ).rowcount
            top = db.execute("SELECT COALESCE(MAX(pos), 0) FROM covisits").fetchone()[0]
            return n + db.execute("DELETE FROM covisits WHERE pos <= ?", (top - self.max_covisits,)).rowcount

        return self._tx(run)

    def last_seq(self) -> int:
        with self._lock:
            # sqlite_sequence keeps the high-water mark even when compaction drops the newest rows' peers
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    # ---- counters and co-visits --------------------------------------------------------
    def note(self, interactions: list[tuple[str, float, bool, tuple | None]], shown: list[str]) -> None:
        """One flush from an ingress: interactions (item, weight, is a click, co-visit pair or None)
        and the items shown. Applied in one transaction."""
        pop, clk, imp, pairs = {}, {}, {}, []
        for item_id, weight, click, covisit in interactions:
            if covisit is not None:
                pairs.append((covisit[0], json.dumps(list(covisit[1]))))
            pop[item_id] = pop.get(item_id, 0.0) + max(weight, 0.0)
            if click:
                clk[item_id] = clk.get(item_id, 0) + 1
        for item_id in shown:
            imp[item_id] = imp.get(item_id, 0) + 1

        def write(db):
            for item_id in set(pop) | set(clk) | set(imp):
                db.execute("INSERT INTO counters VALUES (?, ?, ?, ?) ON CONFLICT(item_id) DO UPDATE SET "
                           "popularity = popularity + excluded.popularity, "
                           "impressions = impressions + excluded.impressions, clicks = clicks + excluded.clicks",
                           (item_id, pop.get(item_id, 0.0), imp.get(item_id, 0), clk.get(item_id, 0)))
            db.executemany("INSERT INTO covisits (item_id, recent) VALUES (?, ?)", pairs)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('stats_version', ?)", (str(self.stats_version + 1),))
            # memory follows the database inside the same lock (the board serves 8 calls at once)
            for d, delta in ((self.popularity, pop), (self.clicks, clk), (self.impressions, imp)):
                for k, v in delta.items():
                    if v or k in d:  # as a reload sees it: an item whose count is 0 has no entry
                        d[k] = d.get(k, 0) + v
            self.stats_version += 1

        self._tx(write)
        if pairs:
            self._after_write()

    # ---- what replicas pull ------------------------------------------------------------
    def sync(self, seq: int, stats_version: int, covisit_pos: int = 0, epoch: str | None = None,
             artifact_id: str | None = None):
        """(epoch, item changes after ``seq``, counters if they changed, (last co-visit position,
        pairs after ``covisit_pos``)). A replica whose ``epoch`` differs gets everything from 0
        and must first reset to its artifact (the epoch it gets back tells it so)."""
        if artifact_id is not None and artifact_id != self.artifact_id:
            if self.artifact_id is not None:
                log.warning("catalog log moves from artifact %s to %s: its item edits replay on the new one",
                            self.artifact_id, artifact_id)
            with self._lock:
                self.artifact_id = self._set_meta("artifact_id", artifact_id)
        if epoch is not None and epoch != self.epoch:
            seq, stats_version, covisit_pos = 0, -1, 0
        with self._lock:
            rows = self._db.execute("SELECT seq, item_id, item, vector FROM changes WHERE seq > ? ORDER BY seq",
                                    (seq,)).fetchall()
            cov = self._db.execute("SELECT pos, item_id, recent FROM covisits WHERE pos > ? ORDER BY pos LIMIT ?",
                                   (covisit_pos, self.sync_batch)).fetchall()
            stats = None
            if stats_version != self.stats_version:
                stats = (self.stats_version, dict(self.popularity), dict(self.impressions), dict(self.clicks))
        pairs = [(item, json.loads(recent)) for _, item, recent in cov]
        return self.epoch, rows, stats, (cov[-1][0] if cov else covisit_pos, pairs)

    def info(self) -> dict:
        with self._lock:
            n = self._db.execute("SELECT COUNT(*) FROM changes").fetchone()[0]
            c = self._db.execute("SELECT COUNT(*) FROM covisits").fetchone()[0]
        return {"epoch": self.epoch, "artifact_id": self.artifact_id, "last_seq": self.last_seq(),
                "changes": n, "covisits": c, "stats_version": self.stats_version}
