"""Fencing epochs on both stores (SQLite file, real redis-server): two live incarnations of one
shard, the older kept reachable as a partitioned node would be. Its writes after the newer one
started are refused whole with ``FencedError``, it stops serving, and every acknowledged event is
stored exactly once (``ecrec.profiles.fencing``)."""
from __future__ import annotations

import itertools
import pickle
import threading
import time
from collections import Counter

import numpy as np
import pytest

from ecrec.chat.session import ChatSession
from ecrec.profiles.events import Event
from ecrec.profiles.fencing import Fence, FencedError
from ecrec.profiles.shard import ProfileShard, decode_payload

DIM = 16
USERS = ["ann", "bob", "cid", "dee"]
rng = np.random.default_rng(0)
V = rng.standard_normal((64, DIM)).astype(np.float32)
V /= np.linalg.norm(V, axis=1, keepdims=True)


def _click(user: str, n: int, eid: str) -> Event:
    return Event(user_id=user, type="click", item_id=f"i{n}", ts=1000.0 + n, event_id=eid)  # its vector: V[n % 64]


class _Counting:
    """A store that counts the calls made on it (a fenced shard must make none)."""

    def __init__(self, store):
        self._store, self.calls = store, 0

    def __getattr__(self, name):
        real = getattr(self._store, name)
        if not callable(real):
            return real

        def call(*a, **kw):
            self.calls += 1
            return real(*a, **kw)

        return call


def _logged(store) -> Counter:
    """(user, event id) of every event in the store's log (no snapshots in these tests: the whole log)."""
    out = Counter()
    for user in store.users():
        snaps, events = store.load_user(user)
        assert snaps == []
        out.update((user, decode_payload(p)[0]["e"]["event_id"]) for _, p in events)
    return out


def _kind(make_store) -> str:
    return type(make_store()).__name__


def test_two_live_incarnations_one_writer(make_store):
    old_store = _Counting(make_store())
    old = ProfileShard(old_store, DIM, snapshot_every=1000)
    acked = Counter()  # (user, event id) of every apply that returned applied=True
    for n in range(8):  # before the new incarnation: the old one is the owner
        user = USERS[n % 4]
        assert old.apply(_click(user, n, f"old-{n}"), V[n], None)[1]
        acked[(user, f"old-{n}")] += 1

    new = ProfileShard(make_store(), DIM, snapshot_every=1000)  # the old one lives on, reachable
    assert new.fence.epoch == old.fence.epoch + 1
    old_attempts, refused_by_store, refused_by_guard, new_writes = 8, 0, 0, 0
    calls_after_fence = None
    for n in range(8, 20):  # interleaved: the old one, then the new one, on the same users
        user = USERS[n % 4]
        old_attempts += 1
        with pytest.raises(FencedError) as e:
            old.apply(_click(user, n, f"old-{n}"), V[n], None)
        assert (e.value.shard, e.value.epoch, e.value.newest) == (0, old.fence.epoch, new.fence.epoch)
        assert "newer incarnation of this shard took over" in str(e.value)
        if calls_after_fence is None:
            refused_by_store += 1
            calls_after_fence = old_store.calls
        else:
            refused_by_guard += 1
        # the client retries the refused event (503 + Retry-After) and reaches the new incarnation:
        # the refused write left nothing behind, so its id is not 'seen' and it is applied now
        assert new.apply(_click(user, n, f"old-{n}"), V[n], None)[1]
        acked[(user, f"old-{n}")] += 1
        assert new.apply(_click(user, 40 + n, f"new-{n}"), V[40 + n], None)[1]
        acked[(user, f"new-{n}")] += 1
        new_writes += 2
    # every later call of the old one fails the same way, reads too, without touching the store
    for call in (lambda: old.get("ann"), lambda: old.get_blob("bob"), lambda: old.delete("cid"),
                 lambda: old.record_impressions("dee", ["i1"], 2000.0), lambda: old.chat_get("ann", "s", 60.0)):
        with pytest.raises(FencedError):
            call()
    assert old_store.calls == calls_after_fence and old.profiles == {} and old.stats()["fenced_by"] == new.fence.epoch

    # an event the old one acknowledged, retried at the new one: seen, acknowledged, not applied again
    assert new.apply(_click("ann", 0, "old-0"), V[0], None) == (8, False)
    stored = _logged(make_store())
    assert stored == acked and max(stored.values()) == 1  # none lost, none doubled
    assert sum(stored.values()) == 8 + 24
    for user in USERS:  # the new one continued from the stored state, and a restart reads the same
        want = sum(1 for u, _ in acked if u == user)
        assert new.get(user).version == want == 8
        assert ProfileShard(make_store(), DIM, serving=False).get(user).version == want
    print(f"\n[fencing {_kind(make_store)}] old attempted {old_attempts}, acknowledged 8, refused "
          f"{refused_by_store + refused_by_guard} ({refused_by_store} by the store, {refused_by_guard} by the "
          f"fenced shard without a store call); new acknowledged {new_writes}; stored events {sum(stored.values())}, "
          f"distinct {len(stored)}, versions {[new.get(u).version for u in USERS]}")


def test_a_write_racing_the_takeover_is_either_stored_or_refused(make_store):
    """The old incarnation writes from a thread while the new one starts: each of its writes landed
    before the new epoch (acknowledged, and the new one sees it) or was refused (not stored)."""
    old = ProfileShard(make_store(), DIM, snapshot_every=1000)
    acked, refused, started = Counter(), [], threading.Event()

    def old_writer():
        deadline = time.monotonic() + 60  # (a bound for a broken fence: the assertions below then fail)
        for n in itertools.count():
            if time.monotonic() > deadline:
                return
            user = USERS[n % 4]
            try:
                if old.apply(_click(user, n, f"old-{n}"), V[n % 64], None)[1]:
                    acked[(user, f"old-{n}")] += 1
            except FencedError as e:
                refused.append((f"old-{n}", e))
                return
            if n == 20:
                started.set()

    t = threading.Thread(target=old_writer)
    t.start()
    assert started.wait(30)
    new = ProfileShard(make_store(), DIM, snapshot_every=1000)  # taken while the old one writes
    for n in range(20):
        user = USERS[n % 4]
        assert new.apply(_click(user, n, f"new-{n}"), V[n], None)[1]
        acked[(user, f"new-{n}")] += 1
    t.join(30)
    assert not t.is_alive() and len(refused) == 1 and refused[0][1].newest == new.fence.epoch
    stored = _logged(make_store())
    assert stored == acked and max(stored.values()) == 1 and refused[0][0] not in {e for _, e in stored}
    for user in USERS:
        assert new.get(user).version == sum(1 for u, _ in acked if u == user)
    print(f"\n[fencing race {_kind(make_store)}] old acknowledged {len(acked) - 20} before the takeover, "
          f"refused 1 ({refused[0][0]}); new acknowledged 20; stored {sum(stored.values())}")


def _dump(store) -> tuple:
    users = sorted(store.users())
    return (users, [store.load_user(u) for u in users], [store.read_head(u) for u in users],
            sorted(store.seen_rows()), sorted(tuple(r) for r in store.chat_rows()), sorted(store.tombstones()))


def test_every_refused_write_applies_nothing(make_store):
    store = make_store()
    shard = ProfileShard(store, DIM, snapshot_every=2)
    for n in range(3):
        shard.apply(_click("ann", n, f"e{n}"), V[n], None)
    shard.chats.put(ChatSession.new("ann", 1000.0))
    stale = shard.fence
    ProfileShard(make_store(), DIM)  # a newer incarnation
    before = _dump(store)
    writes = {
        "append": lambda f: store.append("ann", "x", b"payload", b"head", fence=f),
        "append_many": lambda f: store.append_many([("ann", b"p")], [b"h"], fence=f),
        "snapshot": lambda f: store.snapshot("ann", 99, b"blob", fence=f),
        "drop_snapshot": lambda f: store.drop_snapshot("ann", store.load_user("ann")[0][0][0], fence=f),
        "delete_user": lambda f: store.delete_user("ann", lambda ids: (b"k" * 16, 5.0, b""), fence=f),
        "put_chat": lambda f: store.put_chat("ann", "s2", 1.0, b"state", fence=f),
        "delete_chat": lambda f: store.delete_chat("ann", store.chat_rows()[0][1], fence=f),
        "purge_chats": lambda f: store.purge_chats(10**12, fence=f),
    }
    for name, write in writes.items():
        with pytest.raises(FencedError):
            write(stale)
        assert _dump(store) == before, name
    assert store.append("ann", "x", b"payload", fence=Fence(0, stale.epoch + 1)) is not None  # the newest passes


def test_epoch_increases_across_restarts(make_store):
    epochs = []
    for _ in range(3):  # open, close, reopen
        shard = ProfileShard(make_store(), DIM)
        epochs.append(shard.fence.epoch)
        shard.store.close()
    reader = ProfileShard(make_store(), DIM, serving=False)  # an export: takes none
    assert epochs == [1, 2, 3] and reader.fence.epoch == 0
    assert ProfileShard(make_store(), DIM).fence.epoch == 4
    print(f"\n[fencing epochs {_kind(make_store)}] {epochs + [4]}")


def test_a_reader_never_fences_the_live_shard_and_cannot_write(make_store):
    live = ProfileShard(make_store(), DIM)
    live.apply(_click("ann", 0, "e0"), V[0], None)
    reader = ProfileShard(make_store(), DIM, serving=False)
    assert reader.peek("ann").version == 1
    assert live.apply(_click("ann", 1, "e1"), V[1], None) == (2, True)
    with pytest.raises(FencedError):
        reader.apply(_click("ann", 2, "e2"), V[2], None)
    assert ProfileShard(make_store(), DIM, serving=False).peek("ann").version == 2


def test_erasure_by_the_new_incarnation_only(make_store):
    old = ProfileShard(make_store(), DIM)
    for n in range(3):
        old.apply(_click("ann", n, f"e{n}"), V[n], None)
    new = ProfileShard(make_store(), DIM)
    with pytest.raises(FencedError):
        old.delete("ann")
    assert new.get("ann").version == 3  # the refused erasure left the user as it was
    assert new.delete("ann") and new.get("ann") is None
    assert new.apply(_click("ann", 1, "e1"), V[1], None)[1] is False  # an erased event's retry
    assert make_store().count_rows("ann") == 0


def test_redis_epochs_are_per_shard(redis_url):
    """On Redis every shard shares one key space: shard 1 starting does not fence shard 0."""
    import uuid

    from ecrec.profiles.store_redis import RedisStore

    prefix = f"t-{uuid.uuid4().hex[:8]}"
    zero = ProfileShard(RedisStore(redis_url, prefix=prefix), DIM, shard_id=0)
    one = ProfileShard(RedisStore(redis_url, prefix=prefix), DIM, shard_id=1)
    assert (zero.fence.epoch, one.fence.epoch) == (1, 1)
    assert zero.apply(_click("ann", 0, "e0"), V[0], None) == (1, True)
    assert one.apply(_click("bob", 0, "e0"), V[0], None) == (1, True)


def test_fenced_error_crosses_ray_and_answers_503():
    """The actor's error reaches the ingress pickled inside a RayTaskError; the ingress answers 503
    with the error's sentence and Retry-After, never a 500 with a traceback. (A unit check of the
    handler: no Ray cluster is started.)"""
    import asyncio
    import json

    from ray.exceptions import RayTaskError

    from deployments.http_app import _remote_error

    e = pickle.loads(pickle.dumps(FencedError(3, 5, 7)))
    assert (e.shard, e.epoch, e.newest) == (3, 5, 7) and "shard 3" in str(e) and "stopped serving" in str(e)
    err = RayTaskError("apply", "Traceback ...", e, proctitle="ProfileShardActor", pid=1, ip="127.0.0.1")
    for raised in (err, err.as_instanceof_cause()):
        reply = asyncio.run(_remote_error(None, raised))
        assert reply.status_code == 503 and reply.headers["Retry-After"] == "1"
        assert "newer incarnation of this shard took over" in json.loads(reply.body)["detail"]


def test_an_event_stored_just_before_the_takeover_is_acknowledged_once(make_store):
    """The takeover lands between an event's append and the snapshot after it: the event stands
    (it is in the log), so its apply and the attribution the actor does next both answer, and only
    the shard's next call is refused. (Before, ``attribute`` was fenced too: the actor answered 503
    "not applied" for a stored event, and a client retry without an event_id applied it twice.)"""
    store = make_store()
    takeover = []

    class TakenOverAfterAppend:
        def __getattr__(self, name):
            real = getattr(store, name)
            if name != "append":
                return real

            def append(*a, **kw):
                out = real(*a, **kw)
                takeover.append(ProfileShard(make_store(), DIM, snapshot_every=1000))  # a new incarnation starts
                return out

            return append

    old = ProfileShard(TakenOverAfterAppend(), DIM, snapshot_every=1)  # a snapshot after every event
    event = _click("ann", 1, "e-1")
    version, applied, *_ = old.apply_event(event, V[1], None)
    assert (version, applied) == (1, True) and old.fenced is not None  # stored, then the snapshot was refused
    assert old.attribute(None, event) is None  # counting the stored event answers
    with pytest.raises(FencedError):
        old.apply_event(_click("ann", 2, "e-2"), V[2], None)
    [new] = takeover
    assert new.apply(event, V[1], None) == (1, False)  # the retry of the stored event: seen, not applied again
    assert _logged(make_store()) == Counter({("ann", "e-1"): 1})
