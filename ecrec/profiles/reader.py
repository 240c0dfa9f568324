"""Reading profiles without asking their shard: the read side of the profile stores.

A shard owns its users' writes and logs each one with the profile as it is after it (its head,
``EventStore.read_head``). Any other process that can reach the store (every node with Redis;
processes of the shard's own node with SQLite) reads a user's head directly: GET recommendations
then costs one store read instead of a call to the shard actor. The store hands out a head only
if no event was logged after it, so what is read is what the shard would answer; where the store
cannot say (no head yet, a head of another format, a store this process cannot reach), ``read``
says so and the caller asks the shard.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ecrec.profiles.profile import CorruptProfileError, UserProfile
from ecrec.profiles.shard import shard_of
from ecrec.profiles.store import ABSENT, CURRENT, SQLiteHeadReader

log = logging.getLogger(__name__)

ASK_SHARD = object()  # ``read``: the store cannot answer for this user; the shard can


class ProfileReader:
    """Heads of ``num_shards`` shards' users from ``store`` ("sqlite": the files under
    ``state_dir``, one per shard; a redis:// URL: keys under ``namespace``)."""

    def __init__(self, store: str, state_dir: str | Path, num_shards: int, namespace: str = "ecrec",
                 retry_after_s: float = 1.0, timeout_s: float = 0.25):
        """A store that fails a read (or does not answer within ``timeout_s``, Redis) is left alone
        for ``retry_after_s``: its reads go to the shards meanwhile. The caller's event loop waits
        at most ``timeout_s`` for a store that stopped answering."""
        self.store, self.state_dir, self.num_shards = store, Path(state_dir), num_shards
        self.namespace, self.retry_after_s, self.timeout_s = namespace, retry_after_s, timeout_s
        self._sources: dict[int, object] = {}
        self._failed_at: dict[int, float] = {}
        # SQLite files are local to a node: only shards known to run on this one are read (``readable``)
        self.readable: set[int] = set(range(num_shards)) if store != "sqlite" else set()
        self.reads = self.asked_shard = 0

    def set_readable(self, shards) -> None:
        """The shards whose store this process may read (for SQLite: those running on this node)."""
        self.readable = set(shards)

    def _key(self, idx: int):
        """What one failure takes out: a shard's SQLite file, or the one Redis every shard shares."""
        return idx if self.store == "sqlite" else "redis"

    def _source(self, idx: int):
        key = self._key(idx)
        src = self._sources.get(key)
        if src is not None:
            return src
        if time.monotonic() - self._failed_at.get(key, -1e9) < self.retry_after_s:
            return None
        try:
            if self.store == "sqlite":
                src = SQLiteHeadReader(self.state_dir / f"profiles-{idx:04d}.db")
            else:
                from ecrec.profiles.store_redis import RedisStore

                src = RedisStore(self.store, prefix=self.namespace, timeout_s=self.timeout_s)
        except Exception as e:  # the shard has not created its file yet; Redis unreachable
            log.info("profile store of shard %d not readable here yet (%s)", idx, e)
            self._failed_at[key] = time.monotonic()
            return None
        self._sources[key] = src
        return src

    def read(self, user_id: str):
        """The user's profile as of their newest acknowledged write, None for a user the store
        does not know (a cold start), or ``ASK_SHARD``."""
        idx = shard_of(user_id, self.num_shards)
        src = self._source(idx) if idx in self.readable else None
        if src is None:
            self.asked_shard += 1
            return ASK_SHARD
        try:
            state, blob = src.read_head(user_id)
        except Exception as e:  # a store restarting, a file replaced: this read goes to the shard
            log.warning("reading user %s's profile from the store failed (%s: %s); asking the shard",
                        user_id, type(e).__name__, e)
            self._drop(idx)
            self.asked_shard += 1
            return ASK_SHARD
        if state == ABSENT:
            self.reads += 1
            return None
        if state == CURRENT:
            try:
                profile = UserProfile.from_bytes(blob)
            except CorruptProfileError as e:  # the shard falls back to a snapshot and the log, and repairs
                log.error("user %s: stored head refused (%s); asking the shard", user_id, e)
            else:
                self.reads += 1
                return profile
        self.asked_shard += 1
        return ASK_SHARD

    def _drop(self, idx: int) -> None:
        key = self._key(idx)
        src = self._sources.pop(key, None)
        self._failed_at[key] = time.monotonic()
        if src is not None:
            try:
                src.close()
            except Exception:
                pass

    def close(self) -> None:
        for src in self._sources.values():
            src.close()
        self._sources = {}
