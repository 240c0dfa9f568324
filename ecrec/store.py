"""Durable per-shard storage of profile events and snapshots.

``EventStore`` is the interface a shard needs; ``SQLiteStore`` (WAL mode, one file per shard,
``synchronous=FULL`` so an acknowledged event survives a crash or power loss) is the default.
A networked store (Redis, Postgres) implements the same five methods for multi-node clusters,
where a restarted shard may come back on another node.

The event log keeps, with each event, the inputs its update used (item vector, clause vectors and
sentiment), so replay after a crash is pure profile arithmetic and never needs the encoder.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Iterator, Protocol


class EventStore(Protocol):
    def append(self, user_id: str, event_id: str, payload: bytes) -> int | None:
        """Durably log an event; return its sequence number, or None if ``event_id`` was seen."""

    def snapshot(self, user_id: str, seq: int, blob: bytes) -> None:
        """Store a profile snapshot covering events up to ``seq`` and drop the log before it."""

    def load(self) -> Iterator[tuple[str, bytes | None, int, list[tuple[int, bytes]]]]:
        """Every user: (user_id, snapshot or None, snapshot seq, [(seq, payload) after it])."""

    def delete_user(self, user_id: str) -> None:
        """Erase a user's snapshot and events."""

    def close(self) -> None: ...


class SQLiteStore:
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        UNIQUE (user_id, event_id)
    );
    CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
    CREATE TABLE IF NOT EXISTS snapshots (
        user_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        blob BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS seen_events (
        user_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        PRIMARY KEY (user_id, event_id)
    ) WITHOUT ROWID;
    """

    def __init__(self, path: str | Path, synchronous: str = "FULL"):
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA secure_delete=ON")  # erased users' bytes are zeroed, not left behind
        self._db.executescript(self.SCHEMA)

    def append(self, user_id: str, event_id: str, payload: bytes) -> int | None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT INTO seen_events VALUES (?, ?)", (user_id, event_id))
                cur = self._db.execute("INSERT INTO events (user_id, event_id, payload) VALUES (?, ?, ?)",
                                       (user_id, event_id, payload))
                self._db.execute("COMMIT")
                return int(cur.lastrowid)
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                return None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def snapshot(self, user_id: str, seq: int, blob: bytes) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", (user_id, seq, blob))
            self._db.execute("DELETE FROM events WHERE user_id = ? AND seq <= ?", (user_id, seq))
            self._db.execute("COMMIT")

    def load(self):
        with self._lock:
            snaps = {u: (s, b) for u, s, b in self._db.execute("SELECT user_id, seq, blob FROM snapshots")}
            logs: dict[str, list] = {}
            for u, s, p in self._db.execute("SELECT user_id, seq, payload FROM events ORDER BY seq"):
                logs.setdefault(u, []).append((s, p))
        for u in sorted(set(snaps) | set(logs)):
            seq, blob = snaps.get(u, (0, None))
            yield u, blob, seq, [(s, p) for s, p in logs.get(u, []) if s > seq]

    def delete_user(self, user_id: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for table in ("events", "snapshots", "seen_events"):
                self._db.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))
            self._db.execute("COMMIT")
            # Erased means erased: checkpoint so no WAL frame keeps the user's data.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def count_rows(self, user_id: str) -> int:
        with self._lock:
            return sum(self._db.execute(f"SELECT COUNT(*) FROM {t} WHERE user_id = ?", (user_id,)).fetchone()[0]
                       for t in ("events", "snapshots", "seen_events"))

    def close(self) -> None:
        with self._lock:
            self._db.close()
