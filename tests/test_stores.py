"""The same shard behaviour on both stores (SQLite file, real Redis): idempotency, restore on a
new process, bounded logs, erasure, chat sessions; lazy loading and the memory budget."""
from __future__ import annotations

import time

import numpy as np
import pytest

from ecrec.profiles.events import Event
from ecrec.profiles.shard import ProfileShard

DIM = 16
rng = np.random.default_rng(0)
V = rng.standard_normal((60, DIM)).astype(np.float32)
V /= np.linalg.norm(V, axis=1, keepdims=True)


def _click(user, n, eid=None):
    return Event(user_id=user, type="click", item_id=f"i{n}", ts=1000.0 + n, event_id=eid or f"e{n}")


def test_idempotent_durable_and_restored_lazily(make_store):
    a = ProfileShard(make_store(), DIM, snapshot_every=5)
    for n in range(12):
        assert a.apply(_click("u", n), V[n], None) == (n + 1, True)
    assert a.apply(_click("u", 3), V[3], None) == (12, False)  # a retry: acknowledged, applied once
    a.apply(_click("w", 40), V[40], None)
    b = ProfileShard(make_store(), DIM, snapshot_every=5)  # a restart, here or on another node
    assert b.restore() == 0 and b.profiles == {}  # nothing replayed at start-up
    assert sorted(b.users()) == ["u", "w"]
    p, q = a.get("u"), b.get("u")
    assert q.version == 12 and q.seen == p.seen and b.loads == 1
    np.testing.assert_allclose(q.long, p.long, atol=2e-3)
    assert b.apply(_click("u", 3), V[3], None) == (12, False)  # the idempotency key survived too
    assert b.get("nobody") is None and b.get("nobody") is None and b.loads == 1  # misses are cached


def test_snapshots_bound_the_log(make_store):
    store = make_store()
    shard = ProfileShard(store, DIM, snapshot_every=5)
    for n in range(23):
        shard.apply(_click("u", n), V[n % 60], None)
    snaps, events = store.load_user("u")
    assert [s for s, _ in snaps] == sorted((s for s, _ in snaps), reverse=True) and len(snaps) == 2
    assert all(s > snaps[-1][0] for s, _ in events) and len(events) <= 10 + 3


def test_erasure_on_both_stores(make_store):
    store = make_store()
    shard = ProfileShard(store, DIM)
    for n in range(4):
        shard.apply(_click("gone", n), V[n], None)
    from ecrec.chat.session import ChatSession

    shard.chats.put(ChatSession.new("gone", 1000.0))
    assert shard.delete("gone") and store.count_rows("gone") == 0 and "gone" not in set(store.users())
    again = ProfileShard(make_store(), DIM)
    assert again.get("gone") is None
    assert again.apply(_click("gone", 1), V[1], None)[1] is False  # a retry of an erased event
    later = Event(user_id="gone", type="click", item_id="i9", ts=time.time() + 1, event_id="new")
    assert again.apply(later, V[9], None)[1]  # a new event after the erasure starts afresh


def test_chat_sessions_and_their_purge(make_store):
    store = make_store()
    store.put_chat("u", "s1", 100.0, b"old")
    store.put_chat("u", "s2", 900.0, b"new")
    assert store.get_chat("u", "s1") == b"old" and store.get_chat("v", "s1") is None
    assert store.purge_chats(500.0) == 1 and store.get_chat("u", "s1") is None
    assert [(r[0], r[1], bytes(r[3])) for r in store.chat_rows()] == [("u", "s2", b"new")]


def test_memory_budget_evicts_least_recent_and_snapshots_first(make_store):
    store = make_store()
    one = ProfileShard(store, DIM, snapshot_every=1000)
    one.apply(_click("probe", 0), V[0], None)
    budget = 3 * one.get("probe").memory_bytes() + 50
    shard = ProfileShard(make_store(), DIM, snapshot_every=1000, max_bytes=budget)
    for n, user in enumerate(["a", "b", "c", "d", "e"]):
        shard.apply(_click(user, n), V[n], None)
    assert shard.cached_bytes <= budget and len(shard.profiles) == 3
    assert set(shard.profiles) == {"c", "d", "e"} and shard.evictions >= 2
    snaps, events = store.load_user("a")  # evicted with an event since its last snapshot: snapshotted
    assert len(snaps) == 1 and snaps[0][0] >= max(s for s, _ in events)
    shard.get("a")  # back from one snapshot, no replay; now the least recent other one goes
    assert "a" in shard.profiles and "c" not in shard.profiles and shard.get("a").version == 1


class _Flaky:
    """A store whose next call of ``method`` runs and then raises, as a reply lost to a timeout."""

    def __init__(self, store, method: str, before: bool = False):
        self._store, self._method, self._before, self.armed = store, method, before, False

    def __getattr__(self, name):
        real = getattr(self._store, name)
        if name != self._method:
            return real

        def call(*a, **kw):
            if self.armed:
                self.armed = False
                if self._before:
                    raise TimeoutError(f"{name}: no answer")
                real(*a, **kw)
                raise TimeoutError(f"{name}: answer lost")
            return real(*a, **kw)

        return call


def test_a_lost_append_reply_never_loses_the_event(make_store):
    """The write landed but its reply was lost: the retry is 'seen', so the cache must not keep
    the profile from before it (the next snapshot would have dropped the event for good)."""
    flaky = _Flaky(make_store(), "append")
    shard = ProfileShard(flaky, DIM, snapshot_every=3)
    shard.apply(_click("u", 0), V[0], None)
    flaky.armed = True
    with pytest.raises(TimeoutError):
        shard.apply(_click("u", 1), V[1], None)
    assert shard.apply(_click("u", 1), V[1], None) == (2, False)  # the retry: seen, and counted
    for n in range(2, 6):
        shard.apply(_click("u", n), V[n], None)  # snapshots follow
    assert ProfileShard(make_store(), DIM).get("u").version == 6


def test_a_failed_snapshot_keeps_the_event_in_the_cache(make_store):
    flaky = _Flaky(make_store(), "snapshot", before=True)
    shard = ProfileShard(flaky, DIM, snapshot_every=2)
    shard.apply(_click("u", 0), V[0], None)
    flaky.armed = True
    assert shard.apply(_click("u", 1), V[1], None) == (2, True)  # acknowledged: the log has it
    assert shard.get("u").version == 2
    shard.apply(_click("u", 2), V[2], None)  # the snapshot is tried again
    assert ProfileShard(make_store(), DIM).get("u").version == 3


def test_an_erasure_whose_reply_is_lost_leaves_no_cached_profile(make_store):
    flaky = _Flaky(make_store(), "delete_user")
    shard = ProfileShard(flaky, DIM, max_bytes=10**9)
    for n in range(3):
        shard.apply(_click("gone", n), V[n], None)
    flaky.armed = True
    with pytest.raises(TimeoutError):
        shard.delete("gone")
    assert shard.get("gone") is None and "gone" not in shard.profiles


def test_a_failed_commit_leaves_no_open_transaction(tmp_path):
    """A COMMIT that fails (here a deferred foreign key; on a full disk, the write itself) must roll
    back: before the fix the transaction stayed open and every later write failed until restart."""
    import sqlite3
    import threading

    from ecrec.profiles.store import transaction

    db = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute("CREATE TABLE child (pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    lock = threading.Lock()
    with pytest.raises(sqlite3.IntegrityError):
        transaction(db, lock, lambda d: d.execute("INSERT INTO child VALUES (42)"))  # fails at COMMIT
    assert not db.in_transaction
    transaction(db, lock, lambda d: d.execute("INSERT INTO parent VALUES (1)"))
    assert db.execute("SELECT COUNT(*) FROM child").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM parent").fetchone()[0] == 1


def test_store_errors_are_recognised():
    import sqlite3

    import redis

    from ecrec.profiles.store import is_store_error

    assert is_store_error(sqlite3.OperationalError("database or disk is full"))
    assert is_store_error(redis.exceptions.ResponseError("OOM command not allowed"))
    assert is_store_error(redis.exceptions.ConnectionError("refused")) and is_store_error(OSError(28, "No space"))
    assert not is_store_error(ValueError("bad event")) and not is_store_error(None)
