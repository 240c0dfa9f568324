"""Drift monitoring on real reviews: a shifted stream raises the alarm, an unshifted one does not."""
import random

import numpy as np
import pytest

from ecrec.operations.drift import DriftConfig, DriftMonitor, Reference, psi, top_share
from ecrec.text.language import detect_language

N = 300


@pytest.fixture(scope="module")
def streams(encoder, data_dir):
    from ecrec.learning.datasets import load_marc, load_online_shopping_categories

    rng = random.Random(0)
    zh_train, _ = load_marc(data_dir, "zh", "train")
    zh_test, _ = load_marc(data_dir, "zh", "test")
    en_test, _ = load_marc(data_dir, "en", "test")
    texts, _, cats = load_online_shopping_categories(data_dir)
    hotel = [t for t, c in zip(texts, cats) if c == "酒店"]  # a product category MARC never had
    out = {}
    for name, pool in (("reference", zh_train), ("zh", zh_test), ("en", en_test), ("hotel", hotel)):
        sample = rng.sample(pool, N)
        out[name] = (encoder.encode(sample, "query"), [detect_language(t) for t in sample])
    return out


def _monitor(streams, name):
    x, langs = streams["reference"]
    m = DriftMonitor(Reference.fit(x, languages=langs, source="MARC zh train"), DriftConfig(min_recent=100))
    for v, lang in zip(*streams[name]):
        m.observe_text(v, language=lang)
    return m.scores()


def test_same_distribution_raises_no_alarm(streams):
    s = _monitor(streams, "zh")
    print(s)
    assert s["ready"] and not s["drift"] and s["alarms"] == []
    assert s["embedding"]["psi_max"] < 0.35 and s["embedding"]["mean_shift"] < 0.003


def test_english_reviews_against_a_chinese_reference_raise_the_alarm(streams):
    s = _monitor(streams, "en")
    print(s)
    assert s["drift"] and s["embedding"]["psi_max"] > 1.0 and s["language_psi"] > 5
    assert any("language" in a for a in s["alarms"]) and any("embedding PSI" in a for a in s["alarms"])


def test_a_new_product_category_raises_the_alarm(streams):
    s = _monitor(streams, "hotel")  # same language, same kind of text, another domain
    print(s)
    assert s["drift"] and s["embedding"]["psi_max"] > 2.0 and s["embedding"]["mean_shift"] > 0.01
    assert "language_psi" in s and s["language_psi"] < 0.25  # the language did not move


def test_psi_known_values_and_mixes():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * np.log(0.9 / 0.5) - 0.4 * np.log(0.1 / 0.5))
    assert top_share(["a"] * 5 + [f"x{j}" for j in range(15)], n=1) == 0.25 and top_share([]) is None
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    m = DriftMonitor(Reference.fit(x, sentiments=["positive"] * 400 + ["negative"] * 100,
                                   items=[f"i{j % 200}" for j in range(500)]), DriftConfig(min_recent=50))
    for j in range(100):
        m.observe_text(rng.standard_normal(16), sentiment="negative")
        m.observe_item("hit")  # every event on one item: concentration jumps
    s = m.scores()
    assert s["sentiment_psi"] > 1 and s["sentiment_mix"] == {"negative": 1.0}
    assert s["popularity"]["top10_share_recent"] == 1.0 and any("top-10" in a for a in s["alarms"])


def test_warm_up_reference_save_and_load(tmp_path):
    rng = np.random.default_rng(1)
    m = DriftMonitor(config=DriftConfig(min_recent=40))
    assert not m.scores()["ready"] and m.scores()["reference"] is None
    for _ in range(40):
        m.observe_text(rng.standard_normal(8), language="zh")
    assert m.reference is not None and m.reference.n == 40 and m.scores()["recent_texts"] == 0
    m.reference.save(tmp_path / "ref.npz")
    back = Reference.load(tmp_path / "ref.npz")
    assert np.array_equal(back.edges, m.reference.edges) and back.mixes == {"language": {"zh": 1.0}}
    with pytest.raises(ValueError):
        Reference.fit(np.zeros((5, 8)))


def test_drift_reference_command_fits_on_marc(data_dir, tmp_path):
    from ecrec.cli import main

    out = tmp_path / "ref.npz"
    main(["drift-reference", "--data", str(data_dir), "-n", "15", "--out", str(out)])
    ref = Reference.load(out)
    assert ref.n == 30 and ref.edges.shape == (8, 9)
    assert ref.mixes["language"].get("zh", 0) >= 0.4 and ref.mixes["language"].get("en", 0) >= 0.4
    assert set(ref.mixes["sentiment"]) <= {"negative", "neutral", "positive"}
    assert ref.mixes["intent"].get("none", 0) >= 0.9  # reviews are not service requests


def test_history_keeps_a_point_a_minute_and_every_alarm_change(streams, tmp_path):
    """A Chinese stream for six minutes, then English: one point per minute while calm, one at
    once when the alarm turns on (not a minute later), and a plot of them."""
    from ecrec.operations.drift_history import DriftHistory, plot_history

    x, langs = streams["reference"]
    m = DriftMonitor(Reference.fit(x, languages=langs, source="MARC zh train"), DriftConfig(min_recent=100, window=150))
    h = DriftHistory(every_s=60.0, keep=10)
    t = 1_000_000.0
    for v, lang in zip(*streams["zh"]):
        m.observe_text(v, language=lang)
        t += 1.25  # a text every 1.25 s: 300 texts over 6.25 minutes
        h.add(t, m.scores())
    calm = list(h.points)
    assert len(calm) == 5 and not any(p["alarm"] for p in calm)  # ready at text 100 (t+125 s), then each minute
    assert [round(b["ts"] - a["ts"]) for a, b in zip(calm, calm[1:])] == [60, 60, 60, 60]
    for i, (v, lang) in enumerate(zip(*streams["en"])):
        m.observe_text(v, language=lang)
        if h.add(t + 1 + i * 0.1, m.scores()) and h.points[-1]["alarm"]:
            break
    alarm = h.points[-1]
    assert alarm["alarm"] and alarm["ts"] - calm[-1]["ts"] < 60 and alarm["alarms"], alarm
    assert all(p["alarms"] == [] for p in calm) and set(alarm["alarms"]) <= {"embedding_psi_max", "language_psi"}
    assert set(alarm) >= {"ts", "alarm", "embedding_psi_max", "embedding_mean_shift", "language_psi"}
    png = plot_history(list(h.points), tmp_path / "drift.png")
    assert png.stat().st_size > 20_000
    with pytest.raises(ValueError, match="no drift points"):
        plot_history([], tmp_path / "none.png")
