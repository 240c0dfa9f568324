"""Profile update rules on hand-made vectors (plumbing; the real model is in test_recommender)."""
import numpy as np
import pytest

from ecrec.profiles.events import Event
from ecrec.profiles.profile import ProfileConfig, UserProfile
from ecrec.text.sentiment import Clause, Sentiment, TextAnalysis

DIM = 8
E = np.eye(DIM, dtype=np.float32)


def _sent(pos, neu, neg):
    return Sentiment("positive" if pos >= max(neu, neg) else ("negative" if neg > neu else "neutral"),
                     {"positive": pos, "neutral": neu, "negative": neg})


def _analysis(*clauses):
    cl = [Clause(t, _sent(*p), v) for t, p, v in clauses]
    return TextAnalysis(" ".join(c.text for c in cl), "zh", False, cl[0].sentiment, cl[0].vector, cl)


def test_clause_sentiment_pulls_and_pushes():
    p = UserProfile("u", DIM)
    a = _analysis(("拍照效果很好", (0.9, 0.05, 0.05), E[0]), ("但电池续航不太理想", (0.05, 0.1, 0.85), E[1]))
    p2 = p.apply(Event(user_id="u", type="review", text="x", ts=100.0), analysis=a)
    assert p2.interest_vector(100.0) @ E[0] > 0.9
    assert p2.interest_vector(100.0) @ E[1] == pytest.approx(0.0)
    assert p2.avoid_vector() @ E[1] == pytest.approx(1.0)
    assert [r.label for r in p2.reasons] == ["拍照效果很好", "但电池续航不太理想"]
    assert p.version == 0 and p2.version == 1 and not np.any(p.long)  # old profile untouched


def test_item_event_weights_and_dislike():
    p = UserProfile("u", DIM)
    for t, ev_type, vec in ((1, "view", E[0]), (2, "purchase", E[1]), (3, "dislike", E[2])):
        p = p.apply(Event(user_id="u", type=ev_type, item_id=f"i{t}", ts=float(t)), item_vector=vec)
    w = p.long
    assert w[1] / w[0] == pytest.approx(ProfileConfig().purchase / ProfileConfig().view, rel=1e-3)
    assert p.avoid_vector() @ E[2] == pytest.approx(1.0)
    assert set(p.disliked) == {"i3"} and set(p.purchased) == {"i2"} and set(p.seen) == {"i1", "i2"}


def test_review_stars_steer_the_item():
    p = UserProfile("u", DIM)
    one = p.apply(Event(user_id="u", type="review", item_id="a", rating=1, ts=1.0), item_vector=E[3])
    five = p.apply(Event(user_id="u", type="review", item_id="a", rating=5, ts=1.0), item_vector=E[3])
    assert one.avoid_vector() @ E[3] == pytest.approx(1.0) and not np.any(one.long)
    assert five.interest_vector(1.0) @ E[3] == pytest.approx(1.0)


def test_time_decay_halves_after_half_life():
    cfg = ProfileConfig(long_half_life_s=100.0)
    p = UserProfile("u", DIM).apply(Event(user_id="u", type="click", item_id="a", ts=0.0), E[0], config=cfg)
    p = p.apply(Event(user_id="u", type="click", item_id="b", ts=100.0), E[1], config=cfg)
    assert p.long[0] / p.long[1] == pytest.approx(0.5, rel=1e-4)


def test_session_interest_follows_the_latest_events():
    cfg = ProfileConfig(session_half_life_s=60.0)
    p = UserProfile("u", DIM)
    for t in range(5):
        p = p.apply(Event(user_id="u", type="click", item_id=f"a{t}", ts=float(t)), E[0], config=cfg)
    p = p.apply(Event(user_id="u", type="cart", item_id="b", ts=3600.0), E[1], config=cfg)
    assert p.interest_vector(3600.0, cfg, session_share=1.0) @ E[1] > 0.99
    assert p.interest_vector(3600.0, cfg, session_share=0.0) @ E[0] > 0.8


def test_multi_interest_centroids():
    p = UserProfile("u", DIM)
    for t, v in enumerate([E[0], E[0], E[4], E[5], E[6]]):
        p = p.apply(Event(user_id="u", type="click", item_id=f"x{t}", ts=float(t)), v)
    assert len(p.interests) == ProfileConfig().max_interests
    assert max(c @ E[0] for c in p.interest_centroids()) > 0.85


def test_failed_update_leaves_profile_unchanged():
    p = UserProfile("u", DIM).apply(Event(user_id="u", type="click", item_id="a", ts=1.0), E[0])
    before = p.to_bytes()
    bad = E[1].copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        p.apply(Event(user_id="u", type="click", item_id="b", ts=2.0), bad)
    with pytest.raises(ValueError, match="shape"):
        p.apply(Event(user_id="u", type="click", item_id="b", ts=2.0), np.ones(3))
    with pytest.raises(ValueError, match="needs its vector"):
        p.apply(Event(user_id="u", type="click", item_id="b", ts=2.0))
    with pytest.raises(ValueError, match="applied to profile"):
        p.apply(Event(user_id="v", type="click", item_id="b", ts=2.0), E[1])
    assert p.to_bytes() == before


@pytest.mark.parametrize("fields,msg", [
    ({"type": "click"}, "needs item_id"), ({"type": "search"}, "needs text"),
    ({"type": "review"}, "text or rating"), ({"type": "search", "text": "   "}, "empty"),
    ({"type": "click", "item_id": "a", "rating": 5}, "rating"),
    ({"type": "review", "item_id": "a", "rating": 6}, "rating"), ({"type": "teleport", "item_id": "a"}, "type"),
    ({"type": "click", "item_id": "a", "ts": float("nan")}, "ts"),
])
def test_bad_events_are_rejected(fields, msg):
    with pytest.raises(ValueError, match=msg):
        Event(user_id="u", **fields)


def _heavy(user="user-42", events=300, lists=40, dim=384, id_len=10, seed=0):
    """A shopper at the bounds: clicks, carts, purchases, dislikes and reviews, and 40 lists shown."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((5, dim)).astype(np.float32)
    p = UserProfile(user, dim)

    def vec(topic):
        v = topics[topic] + 0.5 * rng.standard_normal(dim).astype(np.float32)
        return v / np.linalg.norm(v)

    kinds = ["click", "click", "view", "cart", "purchase", "dislike"]
    for t in range(events):
        item = f"{t:0{id_len}d}"
        if t % 10 == 9:
            a = _analysis((f"clause {t} is good", (0.8, 0.1, 0.1), vec(t % 5)), (f"but {t} is bad", (0.1, 0.1, 0.8), vec(4)))
            p = p.apply(Event(user_id=user, type="review", text="x", ts=1e6 + t), analysis=a)
        else:
            p = p.apply(Event(user_id=user, type=kinds[t % 6], item_id=item, ts=1e6 + t), vec(t % 3))
        if t % (events // lists) == 0:
            p = p.record_impressions([f"{j:0{id_len}d}" for j in rng.integers(0, 10_000, 10)], 1e6 + t)
    return p


def test_serialisation_is_exact_and_within_budget():
    p = _heavy()
    data = p.to_bytes()
    back = UserProfile.from_bytes(data)
    assert back.to_bytes() == data  # the profile apply returns is already its stored form
    for name in ("seen", "purchased", "disliked", "impressions", "recent", "recent_positive", "interest_ts"):
        assert getattr(back, name) == getattr(p, name), name
    np.testing.assert_array_equal(back.interests, p.interests)
    np.testing.assert_array_equal(back.session, p.session)
    assert [(r.kind, r.label) for r in back.reasons] == [(r.kind, r.label) for r in p.reasons]
    from ecrec.profiles import profile_codec

    assert profile_codec.size(p) == len(data)  # what the budget counts is what is written
    print(f"bytes per profile at the bounds: {len(data)}, memory {p.memory_bytes()}")
    assert len(data) <= ProfileConfig().max_bytes and p.memory_bytes() <= 4096
    assert len(p.interests) == 3 and len(p.recent) >= 20 and len(p.impressions) >= 20 and len(p.purchased) >= 16
    said = [r for r in p.reasons if r.interest is not None]
    assert len(said) == 2 and said[-1].label == "clause 299 is good"  # the newest positive clauses, to explain
    assert all(abs(np.linalg.norm(r.vector) - 1) < 1e-5 for r in said)


def test_the_budget_drops_old_impressions_first_and_keeps_purchases():
    cfg = ProfileConfig(max_bytes=1600)  # 8-dim vectors: room for a few dozen items
    p = UserProfile("u", DIM)
    for t in range(60):
        p = p.apply(Event(user_id="u", type="purchase" if t < 5 else "click", item_id=f"item-{t:04d}", ts=float(t)),
                    E[t % DIM], config=cfg)
        p = p.record_impressions([f"shown-{t}-{j}" for j in range(10)], float(t), cfg)
    assert len(p.to_bytes()) <= 1600
    assert set(p.purchased) == {f"item-{t:04d}" for t in range(5)}  # bought items go last
    assert p.recent[-1] == "item-0059" and p.impression_count("shown-59-3", 59.0, cfg) == pytest.approx(1.0)
    assert p.impression_count("shown-0-3", 59.0, cfg) == 0.0  # the oldest impressions went first
    assert len(p.impressions) >= 20


def test_int8_sums_stay_with_the_exact_sum_and_keep_moving():
    """400 events into int8 rows, rewritten at every event: the sum stays within rounding of the
    exact one, and the last 100 events (a neighbouring topic) still pull it as far as they should."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 384)).astype(np.float32)
    b = a + 0.45 * b  # a neighbouring topic (cosine ~0.9: the same interest centroid)
    x = np.concatenate([a + 0.3 * rng.standard_normal((300, 384)), b + 0.3 * rng.standard_normal((100, 384))])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    new_topic = b / np.linalg.norm(b) - a / np.linalg.norm(a)
    p, ref = UserProfile("u", 384), np.zeros(384, np.float64)
    for t in range(400):
        kind = ("click", "cart", "purchase")[t % 3]
        p = p.apply(Event(user_id="u", type=kind, item_id=f"i{t}", ts=5.0), x[t])  # one instant: no decay
        ref += ProfileConfig().item_weight(kind) * x[t]
    cos = float(p.long @ ref / np.linalg.norm(p.long) / np.linalg.norm(ref))
    moved = float(p.long @ new_topic) / float(ref @ new_topic)
    print(f"cos to the exact sum {cos:.5f}, the last 100 events' pull kept: {moved:.3f}")
    assert cos > 0.998 and moved == pytest.approx(1.0, abs=0.05)


def test_a_cached_profile_holds_at_most_4_kb(tmp_path):
    """Measured, not estimated: the memory a shard's cache grows by per heavy profile (tracemalloc)."""
    import dataclasses
    import tracemalloc

    from ecrec.profiles.shard import ProfileShard
    from ecrec.profiles.store import SQLiteStore

    p = _heavy()
    store = SQLiteStore(tmp_path / "s.db")
    users = [f"shopper-{n:06d}" for n in range(300)]
    for u in users:
        store.snapshot(u, 1, dataclasses.replace(p, user_id=u).to_bytes())
    shard = ProfileShard(store, 384)
    shard.get(users[0])
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for u in users[1:]:
        assert shard.get(u).version == p.version
    per_profile = (tracemalloc.get_traced_memory()[0] - before) / (len(users) - 1)
    tracemalloc.stop()
    print(f"memory per cached profile: {per_profile:.0f} bytes (accounted {shard.cached_bytes / len(users):.0f})")
    assert per_profile <= 4096
    assert shard.cached_bytes / len(users) >= 0.9 * per_profile  # the cache's budget counts what it holds


def test_impression_counts_equal_the_one_at_a_time_rule():
    """Ranking reads every candidate's fatigue in one call: the same numbers as one by one, with
    decay, repeats and items never shown."""
    cfg = ProfileConfig(impression_half_life_s=3600.0)
    p = UserProfile("u", 8)
    p = p.record_impressions(["a", "b"], 1000.0, cfg).record_impressions(["a"], 2000.0, cfg)
    ids, now = ["a", "b", "never", "a"], 9000.0
    got = p.impression_counts(ids, now, cfg)
    assert got.tolist() == [p.impression_count(i, now, cfg) for i in ids]
    assert got[0] > got[1] > 0 and got[2] == 0.0
    assert UserProfile("v", 8).impression_counts(ids, now, cfg).tolist() == [0.0] * 4
