"""Profile update rules on hand-made vectors (plumbing; the real model is in test_recommender)."""
import numpy as np
import pytest

from ecrec.events import Event
from ecrec.profile import ProfileConfig, UserProfile
from ecrec.sentiment import Clause, Sentiment, TextAnalysis

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


def test_serialisation_roundtrip_and_size():
    rng = np.random.default_rng(0)
    p = UserProfile("user-42", 384)
    for t in range(40):
        v = rng.standard_normal(384).astype(np.float32)
        p = p.apply(Event(user_id="user-42", type="click", item_id=f"item-{t:05d}", ts=float(t)), v / np.linalg.norm(v))
    p = p.record_impressions([f"item-{t:05d}" for t in range(20)], 50.0)
    data = p.to_bytes()
    back = UserProfile.from_bytes(data)
    assert back.version == p.version and back.seen == p.seen and back.impressions == p.impressions
    np.testing.assert_allclose(back.interest_vector(50.0), p.interest_vector(50.0), atol=2e-3)
    assert len(back.interests) == len(p.interests) and len(back.reasons) == len(p.reasons)
    print(f"bytes per profile (40 clicks, 20 impressions): {len(data)}")
    assert len(data) < 16_000


def test_impressions_decay():
    cfg = ProfileConfig(impression_half_life_s=10.0)
    p = UserProfile("u", DIM).record_impressions(["a"], 0.0, cfg).record_impressions(["a"], 0.0, cfg)
    assert p.impression_count("a", 0.0, cfg) == pytest.approx(2.0)
    assert p.impression_count("a", 10.0, cfg) == pytest.approx(1.0)
