"""Durable profile shards on SQLite: idempotency, crash restore, snapshots, erasure."""
import numpy as np
import pytest

from ecrec.profiles.events import Event
from ecrec.profiles.shard import ProfileShard, shard_of
from ecrec.text.sentiment import Clause, Sentiment, TextAnalysis
from ecrec.profiles.store import SQLiteStore

DIM = 16
rng = np.random.default_rng(0)
V = rng.standard_normal((50, DIM)).astype(np.float32)
V /= np.linalg.norm(V, axis=1, keepdims=True)


def _analysis(i):
    s_pos = Sentiment("positive", {"positive": 0.8, "neutral": 0.1, "negative": 0.1})
    s_neg = Sentiment("negative", {"positive": 0.1, "neutral": 0.1, "negative": 0.8})
    cl = [Clause("good", s_pos, V[i]), Clause("but bad", s_neg, V[i + 1])]
    return TextAnalysis("good but bad", "en", False, s_pos, V[i + 2], cl)


def _feed(shard, user, n, start=0):
    for t in range(start, start + n):
        if t % 3 == 0:
            shard.apply(Event(user_id=user, type="review", text="good but bad", ts=float(t), event_id=f"e{t}"),
                        None, _analysis(t % 40))
        else:
            shard.apply(Event(user_id=user, type="click", item_id=f"i{t}", ts=float(t), event_id=f"e{t}"),
                        V[t % 50], None)


def test_shard_of_is_stable():
    # fixed by blake2b (little-endian first 8 bytes mod n), the same in every process and release:
    # Python's salted hash, another digest or byte order would move users to other shards
    assert [shard_of(f"user-{i}", 4) for i in range(8)] == [3, 2, 2, 2, 3, 2, 2, 2]
    assert [shard_of(u, 7) for u in ("a", "b", "user-1", "用户")] == [4, 0, 5, 5]
    assert len({shard_of(f"user-{i}", 4) for i in range(100)}) == 4


def test_retried_event_is_applied_once(tmp_path):
    shard = ProfileShard(SQLiteStore(tmp_path / "s.db"), DIM)
    ev = Event(user_id="u", type="click", item_id="a", ts=1.0, event_id="evt-1")
    assert shard.apply(ev, V[0], None) == (1, True)
    assert shard.apply(ev, V[0], None) == (1, False)
    assert shard.get("u").version == 1
    # and still after a restart
    shard2 = ProfileShard(SQLiteStore(tmp_path / "s.db"), DIM)
    assert shard2.apply(ev, V[0], None) == (1, False)


@pytest.mark.parametrize("snapshot_every", [1000, 7])
def test_restore_after_crash_equals_live_state(tmp_path, snapshot_every):
    live = ProfileShard(SQLiteStore(tmp_path / "s.db"), DIM, snapshot_every=snapshot_every)
    _feed(live, "u", 30)
    _feed(live, "w", 10)
    live.record_impressions("u", ["i1", "i2"], 40.0)
    # a crash: no close, no flush; a new process opens the same file
    restored = ProfileShard(SQLiteStore(tmp_path / "s.db"), DIM, snapshot_every=snapshot_every)
    for user in ("u", "w"):
        a, b = live.get(user), restored.get(user)
        assert a.version == b.version and a.seen == b.seen and a.impressions == b.impressions
        # snapshots hold float16 vectors; the log replays exactly
        tol = 1e-6 if snapshot_every == 1000 else 2e-3
        np.testing.assert_allclose(a.interest_vector(40.0), b.interest_vector(40.0), atol=tol)
        np.testing.assert_allclose(a.avoid_vector(), b.avoid_vector(), atol=tol)
    _feed(restored, "u", 5, start=30)
    assert restored.get("u").version == live.get("u").version + 5


def test_failed_event_writes_nothing(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    shard = ProfileShard(store, DIM)
    shard.apply(Event(user_id="u", type="click", item_id="a", ts=1.0), V[0], None)
    bad = V[1].copy()
    bad[0] = np.nan
    with pytest.raises(ValueError):
        shard.apply(Event(user_id="u", type="click", item_id="b", ts=2.0, event_id="x"), bad, None)
    assert store.count_rows("u") == 3  # one event, its id and the profile after it (the head)
    assert shard.get("u").version == 1


def test_delete_user_leaves_nothing_on_disk(tmp_path):
    path = tmp_path / "s.db"
    shard = ProfileShard(SQLiteStore(path), DIM, snapshot_every=5)
    _feed(shard, "erase-me-please", 12)
    _feed(shard, "keep", 3)
    assert shard.delete("erase-me-please")
    assert shard.get("erase-me-please") is None and shard.get("keep").version == 3
    assert shard.store.count_rows("erase-me-please") == 0
    for f in tmp_path.iterdir():
        assert b"erase-me-please" not in f.read_bytes(), f
    assert ProfileShard(SQLiteStore(path), DIM).get("erase-me-please") is None
    # a late impression (buffered by an ingress before the erase) does not bring the user back
    assert not shard.record_impressions("erase-me-please", ["i1"], 99.0)
    assert shard.get("erase-me-please") is None and shard.store.count_rows("erase-me-please") == 0
