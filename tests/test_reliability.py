"""Defects found in review (issue 12), each with a test that failed before its fix: future
timestamps, clause fan-out, lone surrogates, erasure undone, impression growth, float16 overflow,
corrupt snapshots."""
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from ecrec.profiles.events import Event
from ecrec.profiles.profile import UserProfile
from ecrec.profiles.shard import ProfileShard
from ecrec.profiles.store import SQLiteStore
from ecrec.text.prepare import TextError, clean, split_clauses

# Names that the fixes introduced are imported inside each test, so that on the code before the
# fixes every test fails on its own (not the whole module at collection).

DIM = 16
rng = np.random.default_rng(1)
V = rng.standard_normal((50, DIM)).astype(np.float32)
V /= np.linalg.norm(V, axis=1, keepdims=True)


def _click(user, item, ts, event_id=None):
    return Event(user_id=user, type="click", item_id=item, ts=ts, event_id=event_id)


# 1. a future timestamp froze the profile for good -------------------------------------------
def test_future_timestamp_is_refused_and_cannot_freeze_a_profile(tmp_path):
    from ecrec.profiles.events import FutureTimestampError, check_timestamp

    now = time.time()
    shard = ProfileShard(SQLiteStore(tmp_path / "s.db"), DIM)
    with pytest.raises(FutureTimestampError, match="in the future"):
        shard.apply(_click("u", "a", 4e9), V[0], None)
    assert shard.get("u") is None  # nothing written
    shard.apply(_click("u", "a", now - 10), V[0], None)
    before = shard.get("u").long.copy()
    shard.apply(Event(user_id="u", type="purchase", item_id="b", ts=now), V[1], None)
    assert np.linalg.norm(shard.get("u").long - before) > 1.0  # a later purchase still moves it
    check_timestamp(now + 200, now)  # a little clock skew is fine
    check_timestamp(1.0, now)  # and so is history


def test_events_in_any_order_decay_by_their_age():
    p = UserProfile("u", DIM)
    p = p.apply(_click("u", "a", 10_000_000.0), V[0])
    late = p.apply(_click("u", "b", 10_000_000.0 - 14 * 86400), V[1])  # two weeks older: half weight
    on_time = p.apply(_click("u", "b", 10_000_000.0), V[1])
    w_late = float((late.long - p.long) @ V[1])
    w_now = float((on_time.long - p.long) @ V[1])
    assert w_late == pytest.approx(0.5 * w_now, rel=1e-4)


# 2. unbounded clause fan-out ----------------------------------------------------------------
def test_long_review_is_capped_in_clauses_and_encoder_rows():
    from ecrec.text.prepare import MAX_CLAUSES, encoder_rows

    review = "质量不错。" * 400  # 2,000 characters, 400 sentences
    clauses = split_clauses(clean(review).text)
    assert len(clauses) == MAX_CLAUSES
    assert "".join(clauses).replace(" ", "") == clean(review).text.replace("。", "").replace(" ", "")
    assert encoder_rows(review) == 1 + MAX_CLAUSES
    assert encoder_rows("这款手机拍照效果很好，但电池续航不太理想") == 3
    assert encoder_rows("great") == 1


# 3. lone surrogates --------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["\ud800", "ok \udfff then", "a\ud83d"])
def test_lone_surrogate_is_a_text_error(text):
    with pytest.raises(TextError, match="surrogate"):
        clean(text)


def test_emoji_and_mixed_language_are_fine():
    assert clean("这个 phone 太棒了 😀👍").text == "这个 phone 太棒了 😀👍"


# 4. erasure could be undone ------------------------------------------------------------------
def test_erasure_survives_retries_and_late_events(tmp_path):
    path = tmp_path / "s.db"
    shard = ProfileShard(SQLiteStore(path), DIM)
    t0 = time.time() - 100
    assert shard.apply(_click("gone", "a", t0, "old-1"), V[0], None) == (1, True)
    late = _click("gone", "b", time.time())  # stamped before the erasure, still in flight
    assert shard.delete("gone")
    # a client retry of an erased event id, even with a fresh timestamp
    assert shard.apply(_click("gone", "a", time.time() + 1, "old-1"), V[0], None) == (0, False)
    assert shard.apply(late, V[1], None) == (0, False)  # the event that waited on the encoder
    assert shard.get("gone") is None
    # ... and after a restart
    again = ProfileShard(SQLiteStore(path), DIM)
    assert again.apply(_click("gone", "a", time.time() + 1, "old-1"), V[0], None) == (0, False)
    assert again.get("gone") is None
    # a new event after the erasure starts a new profile
    assert again.apply(_click("gone", "c", time.time() + 2, "new-1"), V[2], None) == (1, True)
    assert _only_new_profile(path)


def _only_new_profile(path):
    db = sqlite3.connect(path)
    rows = db.execute("SELECT event_id FROM events WHERE user_id = 'gone'").fetchall()
    stones = db.execute("SELECT user_key, event_keys FROM tombstones").fetchall()
    return rows == [("new-1",)] and all(b"gone" not in k and b"old-1" not in e for k, e in stones)


def test_tombstone_stores_no_ids(tmp_path):
    shard = ProfileShard(SQLiteStore(tmp_path / "s.db"), DIM)
    shard.apply(_click("erase-7f3a", "a", time.time() - 5, "evt-7f3a"), V[0], None)
    shard.delete("erase-7f3a")
    for f in tmp_path.iterdir():
        data = f.read_bytes()
        assert b"erase-7f3a" not in data and b"evt-7f3a" not in data, f


# 5. impressions grew the database without bound ----------------------------------------------
def test_ten_thousand_lists_keep_the_store_bounded(tmp_path):
    store = SQLiteStore(tmp_path / "s.db", synchronous="NORMAL")
    shard = ProfileShard(store, DIM, snapshot_every=50)
    users = [f"u{i}" for i in range(20)]
    for i, u in enumerate(users):
        shard.apply(_click(u, f"i{i}", time.time() - 10, f"e{i}"), V[i], None)
    items = [f"item-{j:03d}" for j in range(300)]
    half = None
    for flush in range(100):  # 100 flushes of 100 lists: 10,000 lists of 10 items
        batch = [(users[(flush * 100 + n) % 20], items[(n * 10) % 290:(n * 10) % 290 + 10], time.time())
                 for n in range(100)]
        assert shard.record_impressions_many(batch) == 100
        if flush == 49:
            half = store.size_bytes()
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("SELECT COUNT(*) FROM seen_events").fetchone()[0] == 20  # impressions add no ids
    # per user: two snapshots and at most two snapshots' worth of log rows
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] <= 20 * 2 * 50
    assert db.execute("SELECT COUNT(*) FROM profile_snapshots").fetchone()[0] <= 20 * 2
    size = store.size_bytes()
    assert size < 8 * 1024 * 1024, size  # 20 users with 200 impressions each, bounded by max_items
    assert size <= 1.1 * half, (half, size)  # flat: the second 5,000 lists add nothing lasting
    restored = ProfileShard(SQLiteStore(tmp_path / "s.db"), DIM)
    assert restored.get("u3").impressions == shard.get("u3").impressions


# 9. float16 snapshots overflowed -------------------------------------------------------------
def test_strong_profiles_survive_a_snapshot():
    p = UserProfile("heavy", DIM)
    t = 10_000_000.0
    for n in range(300):
        p = p.apply(Event(user_id="heavy", type="purchase", item_id=f"i{n % 5}", ts=t), V[n % 5])
    p.interests *= 1000.0  # as after ~300k strong events at one instant
    p.session *= 1000.0
    assert float(np.abs(p.long).max()) > 65504  # past float16
    q = UserProfile.from_bytes(p.to_bytes())
    assert np.isfinite(q.long).all() and np.isfinite(q.interests).all()
    np.testing.assert_allclose(q.interest_vector(t), p.interest_vector(t), atol=2e-3)
    np.testing.assert_allclose(q.long, p.long, rtol=2e-3, atol=float(np.abs(p.long).max()) * 1e-2)


def test_legacy_snapshots_still_load():
    from tests.legacy_profiles import v2_bytes

    p = UserProfile("old", DIM).apply(_click("old", "a", 10.0), V[0])
    for blob in (v2_bytes(p), v2_bytes(p, scaled=False)):
        q = UserProfile.from_bytes(blob)
        np.testing.assert_allclose(q.long, p.long, atol=1e-2)
        assert q.seen == p.seen and q.version == p.version
        assert UserProfile.from_bytes(q.to_bytes()).to_bytes() == q.to_bytes()  # now in the new form


# corrupt snapshot: refused loudly, with a fall-back -----------------------------------------
def test_corrupt_snapshot_is_refused_and_the_log_rebuilds_the_profile(tmp_path, caplog):
    from ecrec.profiles.profile import CorruptProfileError

    path = tmp_path / "s.db"
    live = ProfileShard(SQLiteStore(path), DIM, snapshot_every=5)
    for n in range(12):  # snapshots at 5 and 10
        live.apply(_click("u", f"i{n}", 1000.0 + n, f"e{n}"), V[n], None)
    db = sqlite3.connect(path)
    (seq, blob), = db.execute("SELECT seq, blob FROM profile_snapshots WHERE user_id='u' "
                              "ORDER BY seq DESC LIMIT 1").fetchall()
    bad = bytearray(blob)
    bad[-7] ^= 0xFF
    db.execute("UPDATE profile_snapshots SET blob = ? WHERE user_id='u' AND seq = ?", (bytes(bad), seq))
    db.commit()
    with pytest.raises(CorruptProfileError, match="checksum"):
        UserProfile.from_bytes(bytes(bad))
    with caplog.at_level("ERROR"):
        restored = ProfileShard(SQLiteStore(path), DIM, snapshot_every=5)
        b = restored.get("u")  # profiles load on first use: the refusal happens here
    assert "refused" in caplog.text and restored.corrupt_snapshots == ["u"]
    a = live.get("u")
    assert a.version == b.version == 12 and a.seen == b.seen
    np.testing.assert_allclose(a.long, b.long, atol=2e-3)
    # the refused snapshot is gone: it can never become the fall-back of a later one
    assert db.execute("SELECT COUNT(*) FROM profile_snapshots WHERE seq = ?", (seq,)).fetchone()[0] == 0
    for n in range(12, 20):  # a new snapshot after the fall-back; then that one breaks as well
        restored.apply(_click("u", f"i{n}", 1000.0 + n, f"e{n}"), V[n], None)
    (seq2, blob2), = db.execute("SELECT seq, blob FROM profile_snapshots WHERE user_id='u' "
                                "ORDER BY seq DESC LIMIT 1").fetchall()
    db.execute("UPDATE profile_snapshots SET blob = ? WHERE user_id='u' AND seq = ?", (blob2[:5], seq2))
    db.commit()
    again = ProfileShard(SQLiteStore(path), DIM, snapshot_every=5)
    assert again.get("u").version == 20 and again.get("u").seen == restored.get("u").seen


# 10. one bad text failed a whole encoder batch ------------------------------------------------
def test_one_bad_text_fails_only_itself():
    from ecrec.text.sentiment import AnalysisFailure, analyze_isolated

    calls = []

    def analyze(texts):  # a model that chokes on one input, as a tokenizer bug would
        calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("tokenizer crashed")
        return [f"ok:{t}" for t in texts]

    out = analyze_isolated(analyze, ["a", "boom", "c"])
    assert out[0] == "ok:a" and out[2] == "ok:c"
    assert isinstance(out[1], AnalysisFailure) and "tokenizer crashed" in out[1].message
    assert not out[1].client_error  # the model failed: a 503 to retry, not the client's fault
    assert calls[0] == ["a", "boom", "c"] and len(calls) == 4  # the batch, then each alone
    assert analyze_isolated(analyze, ["x", "y"]) == ["ok:x", "ok:y"] and len(calls) == 5

    def picky(texts):
        if "bad" in texts:
            raise ValueError("text is not usable")
        return texts

    [refused] = analyze_isolated(picky, ["bad"])
    assert refused.client_error and "not usable" in refused.message  # the text's fault: a 422


# 11. checkpoints were unpickled with weights_only=False ---------------------------------------
class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoints_load_weights_only(tmp_path):
    import pickle

    import torch

    from training.finetune import load_state

    layer = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    layer(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    state = {"branch": layer.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "epoch": 1, "step": 10, "best_f1": 0.5, "bad": 0, "labels": ["a", "b", "c"], "rates": [1.5],
             "config": {"lr": 1e-3, "name": "x", "layers": [1, 2]}}
    torch.save(state, tmp_path / "state.pt")
    got = load_state(tmp_path / "state.pt")
    assert got["labels"] == ["a", "b", "c"] and torch.equal(got["branch"]["weight"], layer.weight)
    torch.save({"evil": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_state(tmp_path / "evil.pt")


# 6. a redeploy with other sharding silently stranded users ------------------------------------
def test_state_layout_refuses_another_shard_count_or_model(tmp_path):
    from ecrec.profiles.profile_layout import Layout, LayoutMismatch, check_or_write

    check_or_write(tmp_path, Layout(2, "e5-small", 384))
    check_or_write(tmp_path, Layout(2, "e5-small", 384))  # the same deploy again: fine
    with pytest.raises(LayoutMismatch, match="sharded 2 ways.*num_shards=4.*ecrec reshard"):
        check_or_write(tmp_path, Layout(4, "e5-small", 384))
    with pytest.raises(LayoutMismatch, match="model 'e5-small'.*another state_dir"):
        check_or_write(tmp_path, Layout(2, "minilm", 384))
    legacy = tmp_path / "legacy"  # written before layout.json: the shard files tell
    legacy.mkdir()
    for i in range(3):
        (legacy / f"profiles-{i:04d}.db").write_bytes(b"")
    with pytest.raises(LayoutMismatch, match="sharded 3 ways"):
        check_or_write(legacy, Layout(2, "e5-small", 384))


# 8. a stale artifact was reused -------------------------------------------------------------
def test_stale_artifact_is_rebuilt_or_refused(tmp_path, monkeypatch):
    import json

    from deployments.config import AppArgs
    from deployments.index_build import ensure_artifact

    monkeypatch.setattr(AppArgs, "home", lambda self: tmp_path)
    catalog = tmp_path / "shop.jsonl"
    rows = [{"id": f"s{i}", "title": t} for i, t in enumerate(["red running shoes", "a blue tent", "拍照手机"])]
    catalog.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    args = AppArgs(catalog=str(catalog))
    d = ensure_artifact(args)
    assert d == tmp_path / "index" / "shop" and json.loads((d / "manifest.json").read_text())["items"] == 3
    first = json.loads((d / "manifest.json").read_text())["artifact_id"]
    assert json.loads((ensure_artifact(args) / "manifest.json").read_text())["artifact_id"] == first  # reused
    rows.append({"id": "s3", "title": "a fourth item"})
    catalog.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    m = json.loads((ensure_artifact(args) / "manifest.json").read_text())
    assert m["items"] == 4 and m["artifact_id"] != first  # the new catalog is served, not the old index
    other = AppArgs(catalog=str(catalog), model="minilm")
    assert other.resolved_index_dir() == tmp_path / "index" / "shop-minilm"
    assert other.resolved_state_dir() == tmp_path / "state-minilm"
    with pytest.raises(ValueError, match="built with model 'e5-small', not 'minilm'"):
        ensure_artifact(AppArgs(index_dir=str(d), model="minilm"))


def test_reshard_moves_every_profile_and_keeps_idempotency_and_erasure(tmp_path):
    from ecrec.profiles.profile_layout import Layout, check_or_write, erasure_key
    from ecrec.profiles.reshard import reshard
    from ecrec.profiles.shard import shard_of

    state = tmp_path / "state"
    check_or_write(state, Layout(2, "e5-small", DIM))
    key = erasure_key(state)
    shards = [ProfileShard(SQLiteStore(state / f"profiles-{i:04d}.db"), DIM, snapshot_every=4, secret=key)
              for i in range(2)]
    users = [f"user-{n}" for n in range(30)]
    t0 = time.time() - 1000
    for n in range(150):
        u = users[n % 30]
        shards[shard_of(u, 2)].apply(_click(u, f"i{n % 17}", t0 + n, f"ev-{n}"), V[n % 50], None)
    shards[shard_of("user-3", 2)].delete("user-3")
    before = {u: shards[shard_of(u, 2)].get(u) for u in users if u != "user-3"}
    from ecrec.retrieval.catalog_log import CatalogLog

    for name in ("catalog.db", "content.db"):  # the item and guide edit logs move with the directory
        CatalogLog(state / name).delete(f"edited-in-{name}")
    out = reshard(state, 3)
    for name in ("catalog.db", "content.db"):
        assert CatalogLog(state / name).last_seq() == 1, name
    assert out["from"] == 2 and out["to"] == 3 and out["users"] == 29 and out["moved"] > 0
    with pytest.raises(Exception, match="sharded 3 ways"):
        check_or_write(state, Layout(2, "e5-small", DIM))
    after = [ProfileShard(SQLiteStore(state / f"profiles-{j:04d}.db"), DIM, snapshot_every=4, secret=erasure_key(state))
             for j in range(3)]
    for u, p in before.items():
        q = after[shard_of(u, 3)].get(u)
        assert q.version == p.version and q.seen == p.seen, u
        np.testing.assert_allclose(q.long, p.long, rtol=2e-3, atol=2e-3)
    home = after[shard_of("user-5", 3)]
    assert home.apply(_click("user-5", "i1", t0 + 5, "ev-5"), V[5], None)[1] is False  # a retry, still known
    assert home.apply(_click("user-5", "i2", time.time(), "ev-new"), V[6], None) == (before["user-5"].version + 1, True)
    gone = after[shard_of("user-3", 3)]
    assert gone.get("user-3") is None
    assert gone.apply(_click("user-3", "i1", t0 + 3, "ev-3"), V[3], None) == (0, False)  # erasure still holds
    assert Path(out["backup"]).exists()


def test_erasure_and_its_tombstone_are_one_transaction(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    shard = ProfileShard(store, DIM)
    shard.apply(_click("u", "a", time.time() - 5, "e1"), V[0], None)

    def crash(ids):  # the process dies while the tombstone is being written
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        store.delete_user("u", crash)
    assert store.count_rows("u") > 0  # nothing erased without its tombstone
    assert shard.delete("u") and store.count_rows("u") == 0
    assert len(list(store.tombstones())) == 1
