"""Reading profiles from the store without their shard (``ecrec.profiles.reader``), on both
stores: what is read is exactly what the shard would answer, or the reader says to ask it."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from ecrec.profiles.events import Event
from ecrec.profiles.reader import ASK_SHARD, ProfileReader
from ecrec.profiles.shard import ProfileShard, encode_payload, shard_of
from ecrec.profiles.store import ABSENT, BEHIND, CURRENT, SQLiteStore

DIM = 16
rng = np.random.default_rng(1)
V = rng.standard_normal((60, DIM)).astype(np.float32)
V /= np.linalg.norm(V, axis=1, keepdims=True)


@pytest.fixture(params=["sqlite", "redis"])
def stores(request, tmp_path):
    """(writer store for shard 0 of 1, a ProfileReader over it)."""
    if request.param == "sqlite":
        writer = SQLiteStore(tmp_path / "profiles-0000.db")
        reader = ProfileReader("sqlite", tmp_path, 1)
        reader.set_readable([0])
    else:
        from ecrec.profiles.store_redis import RedisStore

        url, ns = request.getfixturevalue("redis_url"), f"t-{uuid.uuid4().hex[:8]}"
        writer = RedisStore(url, prefix=ns)
        reader = ProfileReader(url, tmp_path, 1, namespace=ns)
    yield writer, reader
    reader.close()
    writer.close()


def _click(user, n):
    return Event(user_id=user, type="click", item_id=f"i{n}", ts=1000.0 + n, event_id=f"{user}-e{n}")


def test_the_reader_sees_every_acknowledged_write(stores):
    store, reader = stores
    shard = ProfileShard(store, DIM, snapshot_every=4)
    assert reader.read("u") is None  # unknown: a cold start, without asking the shard
    for n in range(9):  # across two snapshots
        shard.apply(_click("u", n), V[n], None)
        got = reader.read("u")
        assert got is not ASK_SHARD and got.version == n + 1
        assert got.stored_bytes() == shard.get_blob("u")
    shard.served_many([("r1", "u", [("i50", "interest"), ("i51", "trending")], 2000.0, "default", "v", False, True)])
    assert reader.read("u").impression_count("i50", 2000.0) > 0  # impressions are writes too
    assert shard.apply(_click("u", 3), V[3], None) == (9, False)  # a retry writes nothing
    assert reader.read("u").stored_bytes() == shard.get_blob("u")
    assert shard.delete("u")
    assert reader.read("u") is None and reader.reads == 13 and reader.asked_shard == 0


def test_a_head_behind_the_log_is_never_handed_out(stores):
    """A write without a head (an ecrec from before heads, still running) after one with it: the
    store knows the user, the head is stale, so the reader sends the caller to the shard."""
    store, reader = stores
    shard = ProfileShard(store, DIM)
    shard.apply(_click("u", 1), V[1], None)
    assert store.read_head("u")[0] == CURRENT
    store.append("u", "old-writer", encode_payload("event", {"e": _click("u", 2).model_dump(mode="json"),
                                                             "item": True, "dim": DIM}, [V[2]]))
    assert store.read_head("u") == (BEHIND, None) and reader.read("u") is ASK_SHARD
    store.append("w", "w-1", b"x")  # a user with a log but no head at all
    assert store.read_head("w") == (BEHIND, None) and reader.read("w") is ASK_SHARD
    assert store.read_head("nobody") == (ABSENT, None)
    # the shard replays the log, and its next write brings the head up to date again
    assert ProfileShard(store, DIM).apply(_click("u", 3), V[3], None) == (3, True)
    assert reader.read("u").version == 3


def test_a_corrupt_head_sends_the_reader_to_the_shard(stores):
    store, reader = stores
    shard = ProfileShard(store, DIM)
    good = shard.apply(_click("u", 1), V[1], None)
    blob = bytearray(shard.get_blob("u"))
    blob[-3] ^= 0xFF
    store.append("u", "u-bad", encode_payload("event", {"e": _click("u", 2).model_dump(mode="json"),
                                                        "item": True, "dim": DIM}, [V[2]]), bytes(blob))
    assert good == (1, True) and reader.read("u") is ASK_SHARD


def test_sqlite_reads_only_the_shards_said_readable(tmp_path):
    """SQLite files are local to a node: a reader reads only shards known to run on its own
    node, never a file it would have to create, and tries a missing file again later."""
    reader = ProfileReader("sqlite", tmp_path, 2, retry_after_s=0.0)
    user = next(u for u in (f"user-{i}" for i in range(100)) if shard_of(u, 2) == 1)
    assert reader.read(user) is ASK_SHARD  # no shard readable yet
    reader.set_readable([0, 1])
    assert reader.read(user) is ASK_SHARD and not (tmp_path / "profiles-0001.db").exists()
    shard = ProfileShard(SQLiteStore(tmp_path / "profiles-0001.db"), DIM)
    shard.apply(_click(user, 1), V[1], None)
    assert reader.read(user).version == 1
    reader.set_readable([0])
    assert reader.read(user) is ASK_SHARD


def test_a_redis_that_stopped_answering_costs_a_read_a_quarter_second(tmp_path):
    """The reader runs on the ingress's event loop: a Redis that accepts connections but never
    answers must not hold it for redis-py's default 10 s and retries. The read goes to the shard
    after ``timeout_s``, and for ``retry_after_s`` no read tries Redis at all."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog; nothing ever answers
    try:
        reader = ProfileReader(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", tmp_path, 4, timeout_s=0.25,
                               retry_after_s=30.0)
        t0 = time.monotonic()
        assert reader.read("u1") is ASK_SHARD
        first = time.monotonic() - t0
        t0 = time.monotonic()
        assert [reader.read(f"u{i}") for i in range(2, 10)] == [ASK_SHARD] * 8  # every shard: one Redis
        rest = time.monotonic() - t0
        assert first < 5.0 and rest < 2.0, (first, rest)  # against 10 s and retries per read before
        reader.close()
    finally:
        silent.close()
