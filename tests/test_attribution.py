"""Online attribution: clicks and purchases tied to the list, source and position that showed them."""
import pytest

from ecrec.operations.attribution import Attribution, merge, position_bucket, report

T = 1_790_000_000.0


def test_position_buckets():
    assert [position_bucket(p) for p in (1, 2, 3, 4, 10, 11, 99)] == ["1", "2-3", "2-3", "4-10", "4-10", "11+", "11+"]


def test_click_on_a_served_item_moves_its_source_ctr():
    a = Attribution()
    items = [("p1", "interest"), ("p2", "similar:p0"), ("p3", "trending"), ("p4", "fresh")]
    a.served("r1", "u1", items, T, arm="A", model_version="m1")
    a.served("r2", "u2", items, T, arm="B", model_version="m1", cold=True)
    hit = a.event("r1", "u1", "p3", "click", T + 5)
    assert hit == {"request_id": "r1", "source": "trending", "position": 3, "arm": "A", "model_version": "m1"}
    assert a.event("r1", "u1", "p3", "click", T + 6) == hit  # counted once
    a.event("r1", "u1", "p3", "purchase", T + 60)
    assert a.event("r1", "u2", "p3", "click", T + 7) is None  # another user's list
    assert a.event("r1", "u1", "p9", "click", T + 7) is None  # not in the list
    assert a.event("nope", "u1", "p1", "click", T + 7) is None  # unknown list
    assert a.event("r1", "u1", "p1", "view", T + 7) is None  # views are not attributed
    r = report(a.window(3600, T + 120), catalog_size=8, window_s=3600)
    assert r["lists"] == 2 and r["items_shown"] == 8
    assert r["by_source"]["trending"] == {"shown": 2, "clicks": 1, "carts": 0, "purchases": 1, "ctr": 0.5, "cvr": 1.0}
    assert r["by_source"]["interest"]["ctr"] == 0.0
    assert r["by_source"]["similar"]["shown"] == 2  # similar:<item> counts as one source family
    assert a.event("r2", "u2", "p2", "click", T + 8)["source"] == "similar:p0"  # the list keeps the detail
    assert r["by_position"]["2-3"]["clicks"] == 1 and r["by_position"]["2-3"]["shown"] == 4
    assert r["by_arm"]["A"]["ctr"] == 0.25 and r["by_arm"]["B"]["ctr"] == 0.0
    assert r["ctr"] == 1 / 8 and r["cvr"] == 1.0
    assert r["unattributed_events"] == {"click": 3}
    assert report(a.window(3600, T + 120), 8, 3600)["by_source"]["similar"]["clicks"] == 1
    assert r["coverage"] == 0.5 and r["cold_start_share"] == 0.5


def test_windows_and_merging_shards():
    a, b = Attribution(), Attribution()
    a.served("r1", "u1", [("p1", "interest")], T - 7200)  # two hours ago
    a.served("r2", "u1", [("p2", "interest")], T)
    b.served("r3", "u2", [("p2", "fresh"), ("p3", "fresh")], T)
    b.text("negative", T)
    b.text("positive", T)
    b.text("positive", T - 10)
    assert report(a.window(3600, T), 10, 3600)["lists"] == 1
    assert report(a.window(3 * 3600, T), 10, 3 * 3600)["lists"] == 2
    r = report(merge([a.window(3600, T), b.window(3600, T)]), 10, 3600)
    assert r["lists"] == 2 and r["distinct_items_shown"] == 2 and r["coverage"] == 0.2
    assert 3600 - 60 < r["span_s"] <= 3600  # whole buckets inside the window, the current one included
    assert r["sentiment_mix"] == {"negative": pytest.approx(1 / 3), "positive": pytest.approx(2 / 3)}


def test_ledger_and_buckets_are_bounded():
    a = Attribution(max_lists=3, retention_s=600)
    for j in range(5):
        a.served(f"r{j}", "u", [("p", "interest")], T + j)
    assert a.event("r0", "u", "p", "click", T + 10) is None  # evicted: the oldest list went first
    assert a.event("r4", "u", "p", "click", T + 10) is not None
    a.served("late", "u", [("p", "interest")], T + 3600)
    assert min(a._buckets) >= int((T + 3600 - 600) // 60)  # buckets older than the retention are gone
    b = Attribution(coverage_s=120)
    b.served("old", "u", [("p1", "interest")], T)
    b.served("new", "u", [("p2", "interest")], T + 600)
    r = report(b.window(3600, T + 600), 10, 3600)
    assert r["lists"] == 2 and r["distinct_items_shown"] == 1  # counts for the day, items for coverage_s
    with pytest.raises(ValueError):
        Attribution(max_lists=0)


def test_shard_ledger_impressions_and_erasure(tmp_path):
    """The shard keeps the ledger: a served list with impressions moves the profile's fatigue, a
    search list does not; a click naming the list is attributed; erasing the user drops the lists."""
    import numpy as np

    from ecrec.profiles.events import Event
    from ecrec.profiles.shard import ProfileShard
    from ecrec.profiles.store import SQLiteStore

    dim = 8
    shard = ProfileShard(SQLiteStore(tmp_path / "s.db"), dim)
    v = np.eye(dim, dtype=np.float32)
    shard.apply(Event(user_id="u1", type="click", item_id="p0", ts=T, event_id="e0"), v[0], None)
    n = shard.served_many([
        ("r1", "u1", [("p1", "interest"), ("p2", "trending")], T + 1, "default", "m1", False, True),
        ("r2", "u1", [("p3", "search")], T + 1, "default", "m1", False, False),
        ("r3", None, [("p4", "interest")], T + 1, "default", "m1", True, False),
    ])
    assert n == 1
    p = shard.get("u1")
    assert p.impression_count("p1", T + 1) == 1.0 and p.impression_count("p3", T + 1) == 0.0
    click = Event(user_id="u1", type="click", item_id="p2", ts=T + 2, event_id="e1")
    shard.apply(click, v[2], None)
    assert shard.attribute("r1", click) == {"request_id": "r1", "source": "trending", "position": 2,
                                            "arm": "default", "model_version": "m1"}
    r = report(shard.attribution.window(3600, T + 5), 10, 3600)
    assert r["by_source"]["trending"]["ctr"] == 1.0 and r["by_source"]["search"]["shown"] == 1
    assert r["lists"] == 3 and r["cold_start_share"] == pytest.approx(1 / 3)
    shard.delete("u1")
    assert shard.attribute("r1", Event(user_id="u1", type="click", item_id="p1", ts=T + 3)) is None


def test_ab_arms_are_stable_balanced_and_validated():
    from ecrec.operations.experiments import Experiment
    from ecrec.retrieval.ranking import RankingConfig

    e = Experiment.parse('{"arms": {"control": {}, "explore20": {"explore_share": 0.2, "fatigue": 0.05}}, "salt": "s1"}')
    users = [f"user-{j}" for j in range(4000)]
    arms = [e.arm_of(u) for u in users]
    assert arms == [e.arm_of(u) for u in users]  # stable
    assert 0.46 < arms.count("control") / len(arms) < 0.54  # balanced
    assert e.arm_of(None) == "control"
    assert Experiment.parse({"arms": {n: dict(o) for n, o in e.arms}, "salt": "s1"}) == e
    reshuffled = Experiment.parse({"arms": {"control": {}, "explore20": {"explore_share": 0.2}}, "salt": "s2"})
    assert sum(e.arm_of(u) != reshuffled.arm_of(u) for u in users) > 1500  # a new salt reshuffles
    cfg = e.config("explore20", RankingConfig(explore_share=0.1, seed=7))
    assert (cfg.explore_share, cfg.fatigue, cfg.seed) == (0.2, 0.05, 7)
    assert e.config("control", RankingConfig(explore_share=0.1)).explore_share == 0.1
    assert Experiment.parse(None) is None and Experiment.parse("") is None
    for bad, needle in [("{", "JSON"), ({"a": {}}, "2 to 8"), ({"A B": {}, "b": {}}, "arm name"),
                        ({"a": {}, "b": {"nope": 1}}, "not a RankingConfig"),
                        ({"a": {}, "b": {"explore_share": 0.9}}, "explore_share"),
                        ({"a": {}, "b": {"candidates_per_source": 2.5}}, "candidates_per_source"),
                        ({"a": {}, "b": {"exclude_seen": 1}}, "exclude_seen"),
                        ({"a": {}, "b": {"seed": 3}}, "seed")]:
        with pytest.raises(ValueError, match=needle):
            Experiment.parse(bad)


def test_app_args_refuse_a_bad_experiment():
    pytest.importorskip("ray.serve")
    from deployments.config import AppArgs

    args = AppArgs.model_validate({"ab_test": '{"control": {}, "b": {"explore_share": 0.3}}'})
    assert args.experiment().names == ["control", "b"]
    with pytest.raises(ValueError, match="explore_share"):
        AppArgs.model_validate({"ab_test": {"control": {}, "b": {"explore_share": -1}}})
