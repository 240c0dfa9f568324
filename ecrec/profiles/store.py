"""Durable per-shard storage of profile events and snapshots.

``EventStore`` is the interface a shard needs; ``SQLiteStore`` (WAL mode, one file per shard,
``synchronous=FULL`` so an acknowledged event survives a crash or power loss) is the default.
A networked store (Redis, Postgres) implements the same methods for multi-node clusters,
where a restarted shard may come back on another node.

The event log keeps, with each event, the inputs its update used (item vector, clause vectors and
sentiment), so replay after a crash is pure profile arithmetic and never needs the encoder.

Growth is bounded per user: the two newest snapshots, the events after the older of them, and the
event ids seen within ``seen_retention_s`` (retries come within minutes; a week is kept).
Impressions carry no event id (they are not retried), so they never enter the seen-ids table.

Each write may also carry the user's profile as it is after the write (its *head*), stored in the
same transaction: a process that is not the user's shard (the ingress serving GET
recommendations) reads it with ``read_head`` instead of asking the shard, and knows it is
current, because a head older than the user's newest logged event is never handed out.

Writes are fenced (``ecrec.profiles.fencing``): a serving shard takes an epoch when it starts
(``take_epoch``), and each of its writes (``fence=``) is refused if a newer one was taken since.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator, Protocol

from ecrec.profiles.fencing import Fence, FencedError

SEEN_RETENTION_S = 7 * 86400.0
# The ``meta`` row holding the newest epoch. One file is one shard, so the row is not named by
# shard index: whoever opens the file (a tool that does not know the index) fences the same shard.
EPOCH_KEY = "epoch"
CURRENT, ABSENT, BEHIND = "current", "absent", "behind"  # what ``read_head`` found


def transaction(db: sqlite3.Connection, lock: threading.Lock, fn):
    """``fn(db)`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` under ``lock``; rolled back if it raises.
    (The connection is opened with ``isolation_level=None``: transactions are explicit.)"""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            out = fn(db)
            db.execute("COMMIT")  # inside: a COMMIT that fails (disk full) must not leave the transaction open
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return out


def is_store_error(e: BaseException | None) -> bool:
    """A durable store that could not do its part (disk full or failing, Redis down or refusing
    writes): the caller answers 503, and nothing was acknowledged."""
    if isinstance(e, (sqlite3.Error, OSError)):
        return True
    return any(c.__module__.startswith("redis") and c.__name__ == "RedisError" for c in type(e).__mro__)


class EventStore(Protocol):
    """Every write a shard makes takes ``fence`` (keyword): refused whole with ``FencedError``
    when a newer epoch of ``fence.shard`` was taken; ``None`` (offline tools) is not checked."""

    def take_epoch(self, shard: int) -> int:
        """A new epoch for ``shard``, above every one handed out before (atomic on the store)."""

    def append(self, user_id: str, event_id: str, payload: bytes, head: bytes | None = None, *,
               fence: Fence | None = None) -> int | None:
        """Durably log an event (and the user's profile after it, ``head``, in the same
        transaction); return its sequence number, or None if ``event_id`` was seen (nothing written)."""

    def append_many(self, rows: list[tuple[str, bytes]], heads: list[bytes] | None = None, *,
                    fence: Fence | None = None) -> list[int]:
        """Durably log (user_id, payload) rows without event ids, with each row's ``heads``, in
        one transaction."""

    def read_head(self, user_id: str) -> tuple[str, bytes | None]:
        """(CURRENT, the profile after the user's newest logged event), (ABSENT, None) for a user
        the store does not know, or (BEHIND, None) when it knows the user but holds no current
        head (written before heads existed, resharded, expired): then only the shard can say."""

    def snapshot(self, user_id: str, seq: int, blob: bytes, *, fence: Fence | None = None) -> None:
        """Store a profile snapshot covering events up to ``seq``; keep the previous one (a
        fall-back if the newest is ever unreadable) and drop the log before the previous one."""

    def load_user(self, user_id: str) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        """One user: ([(seq, snapshot)] newest first, [(seq, payload)] after the older snapshot, or
        the whole log when there is one snapshot or none); both empty for an unknown user. A shard
        loads its users lazily, on first use, so a restarted shard serves at once."""

    def users(self) -> Iterator[str]:
        """Every user with a snapshot or a logged event."""

    def delete_user(self, user_id: str, tombstone=None, *, fence: Fence | None = None) -> list[str]:
        """Erase a user's snapshots, events and seen ids (and write ``tombstone(ids)`` with them)."""

    def drop_snapshot(self, user_id: str, seq: int, *, fence: Fence | None = None) -> None:
        """Remove a snapshot refused at restore, so it never becomes a fall-back itself."""

    def put_tombstone(self, key: bytes, deleted_at: float, event_keys: bytes) -> None: ...

    def put_chat(self, user_id: str, session_id: str, updated_at: float, state: bytes, *,
                 fence: Fence | None = None) -> None:
        """Durably store a chat session's state (``ecrec.chat.session``), replacing the last."""

    def get_chat(self, user_id: str, session_id: str) -> bytes | None: ...

    def delete_chat(self, user_id: str, session_id: str, *, fence: Fence | None = None) -> None: ...

    def purge_chats(self, idle_before: float, *, fence: Fence | None = None) -> int: ...

    def tombstones(self) -> Iterator[tuple[bytes, float, bytes]]: ...

    def secret(self) -> bytes:
        """A per-store random key (for keyed hashes of erased ids)."""

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
    CREATE TABLE IF NOT EXISTS profile_snapshots (
        user_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        blob BLOB NOT NULL,
        PRIMARY KEY (user_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS seen_events (
        user_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        at REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, event_id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS tombstones (
        user_key BLOB PRIMARY KEY,
        deleted_at REAL NOT NULL,
        event_keys BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS profile_heads (
        user_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        blob BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE IF NOT EXISTS chat_sessions (
        user_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        updated_at REAL NOT NULL,
        state BLOB NOT NULL,
        PRIMARY KEY (user_id, session_id)
    ) WITHOUT ROWID;
    """

    def __init__(self, path: str | Path, synchronous: str = "FULL", seen_retention_s: float = SEEN_RETENTION_S):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.seen_retention_s = seen_retention_s
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self.set_synchronous(synchronous)
        self._db.execute("PRAGMA secure_delete=ON")  # erased users' bytes are zeroed, not left behind
        self._migrate_legacy()
        self._db.executescript(self.SCHEMA)

    def set_synchronous(self, synchronous: str) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        with self._lock:
            self._db.execute(f"PRAGMA synchronous={synchronous}")

    def _migrate_legacy(self) -> None:
        """Stores written before snapshot generations and seen-id retention."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "seen_events" in tables:
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(seen_events)")}
            if "at" not in cols:
                self._db.execute("ALTER TABLE seen_events ADD COLUMN at REAL NOT NULL DEFAULT 0")
        if "snapshots" in tables:
            self._db.executescript(self.SCHEMA)

            def move(db):
                db.execute("INSERT OR IGNORE INTO profile_snapshots SELECT user_id, seq, blob FROM snapshots")
                db.execute("DROP TABLE snapshots")

            self._tx(move)  # rolled back whole if it fails half-way

    def _tx(self, fn, fence: Fence | None = None):
        """``fn`` in a write transaction; with ``fence``, only if no newer epoch was taken: read inside the same BEGIN IMMEDIATE, which holds the file's write lock, so no
        ``take_epoch`` can come between the check and the write."""
        if fence is None:
            return transaction(self._db, self._lock, fn)

        def checked(db):
            row = db.execute("SELECT value FROM meta WHERE key = ?", (EPOCH_KEY,)).fetchone()
            newest = int(row[0]) if row else 0
            if newest > fence.epoch:
                raise FencedError(fence.shard, fence.epoch, newest)  # rolls the transaction back
            return fn(db)

        return transaction(self._db, self._lock, checked)

    def take_epoch(self, shard: int) -> int:
        """(``shard`` is not part of the row's key: this file is the shard.)"""
        def bump(db):
            db.execute("INSERT OR IGNORE INTO meta VALUES (?, 0)", (EPOCH_KEY,))
            db.execute("UPDATE meta SET value = value + 1 WHERE key = ?", (EPOCH_KEY,))
            return int(db.execute("SELECT value FROM meta WHERE key = ?", (EPOCH_KEY,)).fetchone()[0])

        return self._tx(bump)

    def append(self, user_id: str, event_id: str, payload: bytes, head: bytes | None = None, *,
               fence: Fence | None = None) -> int | None:
        def write(db):
            db.execute("INSERT INTO seen_events VALUES (?, ?, ?)", (user_id, event_id, time.time()))
            seq = int(db.execute("INSERT INTO events (user_id, event_id, payload) VALUES (?, ?, ?)",
                                 (user_id, event_id, payload)).lastrowid)
            if head is not None:
                db.execute("INSERT OR REPLACE INTO profile_heads VALUES (?, ?, ?)", (user_id, seq, head))
            return seq

        try:
            return self._tx(write, fence)
        except sqlite3.IntegrityError:
            return None

    def append_many(self, rows: list[tuple[str, bytes]], heads: list[bytes] | None = None, *,
                    fence: Fence | None = None) -> list[int]:
        def write(db):
            seqs = []
            for i, (u, p) in enumerate(rows):
                seqs.append(int(db.execute("INSERT INTO events (user_id, event_id, payload) VALUES (?, ?, ?)",
                                           (u, "~" + os.urandom(8).hex(), p)).lastrowid))
                if heads is not None:
                    db.execute("INSERT OR REPLACE INTO profile_heads VALUES (?, ?, ?)", (u, seqs[-1], heads[i]))
            return seqs

        return self._tx(write, fence) if rows else []

    def read_head(self, user_id: str) -> tuple[str, bytes | None]:
        with self._lock:
            return read_head_sqlite(self._db, user_id)

    def snapshot(self, user_id: str, seq: int, blob: bytes, *, fence: Fence | None = None) -> None:
        def write(db):
            db.execute("INSERT OR REPLACE INTO profile_snapshots VALUES (?, ?, ?)", (user_id, seq, blob))
            kept = [s for (s,) in db.execute("SELECT seq FROM profile_snapshots WHERE user_id = ? "
                                             "ORDER BY seq DESC LIMIT 2", (user_id,))]
            db.execute("DELETE FROM profile_snapshots WHERE user_id = ? AND seq < ?", (user_id, kept[-1]))
            if len(kept) == 2:  # with one snapshot, its fall-back is the whole log: keep it
                db.execute("DELETE FROM events WHERE user_id = ? AND seq <= ?", (user_id, kept[-1]))
            db.execute("DELETE FROM seen_events WHERE user_id = ? AND at < ?",
                       (user_id, time.time() - self.seen_retention_s))

        self._tx(write, fence)

    def load_user(self, user_id: str):
        with self._lock:
            kept = self._db.execute("SELECT seq, blob FROM profile_snapshots WHERE user_id = ? ORDER BY seq DESC",
                                    (user_id,)).fetchall()
            oldest = kept[-1][0] if len(kept) == 2 else 0
            events = self._db.execute("SELECT seq, payload FROM events WHERE user_id = ? AND seq > ? ORDER BY seq",
                                      (user_id, oldest)).fetchall()
        return [(s, bytes(b)) for s, b in kept], [(s, bytes(p)) for s, p in events]

    def users(self):
        with self._lock:
            rows = self._db.execute("SELECT user_id FROM profile_snapshots UNION SELECT user_id FROM events").fetchall()
        yield from sorted(u for (u,) in rows)

    def delete_user(self, user_id: str, tombstone=None, *, fence: Fence | None = None) -> list[str]:
        """Erase the user's rows; ``tombstone(event_ids) -> (key, deleted_at, event_keys)``, when
        given, is written in the same transaction (a crash never leaves one without the other)."""
        def write(db):
            ids = [e for (e,) in db.execute("SELECT event_id FROM seen_events WHERE user_id = ?", (user_id,))]
            for table in ("events", "profile_snapshots", "profile_heads", "seen_events", "chat_sessions"):
                db.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))
            if tombstone is not None:
                db.execute("INSERT OR REPLACE INTO tombstones VALUES (?, ?, ?)", tombstone(ids))
            return ids

        ids = self._tx(write, fence)
        with self._lock:  # erased means erased: checkpoint so no WAL frame keeps the user's data
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ids

    def drop_snapshot(self, user_id: str, seq: int, *, fence: Fence | None = None) -> None:
        """Remove a snapshot refused at restore, so it never becomes a fall-back itself."""
        self._tx(lambda db: db.execute("DELETE FROM profile_snapshots WHERE user_id = ? AND seq = ?", (user_id, seq)),
                 fence)

    def put_tombstone(self, key: bytes, deleted_at: float, event_keys: bytes) -> None:
        self._tx(lambda db: db.execute("INSERT OR REPLACE INTO tombstones VALUES (?, ?, ?)",
                                       (key, deleted_at, event_keys)))

    def tombstones(self):
        with self._lock:
            rows = self._db.execute("SELECT user_key, deleted_at, event_keys FROM tombstones").fetchall()
        yield from rows

    def secret(self) -> bytes:
        def read_or_make(db):
            row = db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
            if row:
                return bytes(row[0])
            key = os.urandom(32)
            db.execute("INSERT INTO meta VALUES ('secret', ?)", (key,))
            return key

        return self._tx(read_or_make)

    # ---- chat sessions (``ecrec.chat.session``): one row per (user, session), replaced each turn
    def put_chat(self, user_id: str, session_id: str, updated_at: float, state: bytes, *,
                 fence: Fence | None = None) -> None:
        self._tx(lambda db: db.execute("INSERT OR REPLACE INTO chat_sessions VALUES (?, ?, ?, ?)",
                                       (user_id, session_id, updated_at, state)), fence)

    def get_chat(self, user_id: str, session_id: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM chat_sessions WHERE user_id = ? AND session_id = ?",
                                   (user_id, session_id)).fetchone()
        return bytes(row[0]) if row else None

    def delete_chat(self, user_id: str, session_id: str, *, fence: Fence | None = None) -> None:
        self._tx(lambda db: db.execute("DELETE FROM chat_sessions WHERE user_id = ? AND session_id = ?",
                                       (user_id, session_id)), fence)

    def purge_chats(self, idle_before: float, *, fence: Fence | None = None) -> int:
        return self._tx(lambda db: db.execute("DELETE FROM chat_sessions WHERE updated_at < ?",
                                              (idle_before,)).rowcount, fence)

    def chat_rows(self) -> list[tuple[str, str, float, bytes]]:
        """Every chat session (used when resharding)."""
        with self._lock:
            return self._db.execute("SELECT user_id, session_id, updated_at, state FROM chat_sessions").fetchall()

    def seen_rows(self) -> list[tuple[str, str, float]]:
        """Every (user_id, event_id, at) kept for idempotency (used when resharding)."""
        with self._lock:
            return self._db.execute("SELECT user_id, event_id, at FROM seen_events").fetchall()

    def add_seen(self, rows: list[tuple[str, str, float]]) -> None:
        self._tx(lambda db: db.executemany("INSERT OR IGNORE INTO seen_events VALUES (?, ?, ?)", rows))

    def count_rows(self, user_id: str) -> int:
        with self._lock:
            return sum(self._db.execute(f"SELECT COUNT(*) FROM {t} WHERE user_id = ?", (user_id,)).fetchone()[0]
                       for t in ("events", "profile_snapshots", "profile_heads", "seen_events", "chat_sessions"))

    def size_bytes(self) -> int:
        """The database and its WAL on disk."""
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    def close(self) -> None:
        with self._lock:
            self._db.close()


_HEAD = ("SELECT h.seq, h.blob, (SELECT MAX(seq) FROM events WHERE user_id = h.user_id) "
         "FROM profile_heads h WHERE h.user_id = ?")
_KNOWN = ("SELECT EXISTS (SELECT 1 FROM events WHERE user_id = ?) "
          "OR EXISTS (SELECT 1 FROM profile_snapshots WHERE user_id = ?)")


def read_head_sqlite(db: sqlite3.Connection, user_id: str) -> tuple[str, bytes | None]:
    """``EventStore.read_head`` on one connection: the head and the newest event's seq in one
    statement (one read snapshot), so a head is handed out only if no event came after it."""
    row = db.execute(_HEAD, (user_id,)).fetchone()
    if row is not None and row[2] is not None and row[0] >= row[2]:
        return CURRENT, bytes(row[1])
    if row is None and not db.execute(_KNOWN, (user_id, user_id)).fetchone()[0]:
        return ABSENT, None
    return BEHIND, None


class SQLiteHeadReader:
    """Reads heads from a shard's SQLite file in another process of the same node (WAL lets
    readers run beside the writer). It never creates the file or writes to it; a file that does
    not exist yet (the shard has not started) raises ``sqlite3.OperationalError``."""

    def __init__(self, path: str | Path):
        # a short busy wait: the caller's event loop waits on it, and the shard answers instead
        self._db = sqlite3.connect(f"file:{Path(path)}?mode=rw", uri=True, check_same_thread=False,
                                   isolation_level=None, timeout=0.25)
        self._db.execute("PRAGMA query_only=ON")
        self._lock = threading.Lock()

    def read_head(self, user_id: str) -> tuple[str, bytes | None]:
        with self._lock:
            try:
                return read_head_sqlite(self._db, user_id)
            except sqlite3.OperationalError as e:  # a shard of an older ecrec: no heads table
                if "no such table" in str(e):
                    return BEHIND, None
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
