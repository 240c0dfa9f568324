"""The text/sentiment ablation on a few real users, checked against a hand-rolled replay."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from ecrec.text.encoder import encode_cached
from ecrec.evaluation import replay as replay_mod
from ecrec.evaluation.replay import (NEUTRALISED, REVIEWS, AblationConfig, build_catalog, load_reviews,
                                     run_ablation)
from ecrec.profiles.events import Event
from ecrec.retrieval.ranking import RankingConfig
from ecrec.recommender import Recommender, RecommenderConfig

# 8 users with texts cut to 300 chars: ~390 encoder rows (texts, their clauses, item summaries)
N_USERS, MAX_CHARS, K = 8, 300, 10


def _hand_rolled_ids(analyzer, data_dir, cache_dir):
    """The ``ids`` protocol written out again from the raw file, ingesting through the public
    ``Recommender.ingest``: (user, item, top-k) for every scored event, and the run's counts."""
    with gzip.open(data_dir / REVIEWS, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    users = set(list(dict.fromkeys(r["reviewerID"] for r in rows))[:N_USERS])
    events = sorted((r for r in rows if r["reviewerID"] in users), key=lambda r: r["unixReviewTime"])
    times = sorted(r["unixReviewTime"] for r in events)
    cutoff = times[int(0.7 * len(times))]
    catalog = {r["asin"] for r in events if r["unixReviewTime"] < cutoff}
    items = build_catalog(load_reviews(data_dir, N_USERS, MAX_CHARS), cutoff)
    assert {it.id for it in items} == catalog
    rec = Recommender(analyzer, RecommenderConfig(ranking=RankingConfig(explore_share=0.0), sequence_model="none"))
    rec.add_items(items, encode_cached(analyzer.encoder, [it.embedding_text() for it in items], "passage",
                                       cache_dir))
    out, reviewed = [], {}
    for r in events:
        u, item, ts = r["reviewerID"], r["asin"], float(r["unixReviewTime"])
        if item not in catalog:
            continue
        if ts >= cutoff and reviewed.get(u) and item not in reviewed[u]:
            out.append((u, item, [x.item_id for x in rec.recommend(u, k=K, now=ts)]))
        rec.ingest(Event(user_id=u, type="review", item_id=item, rating=int(r["overall"]), ts=ts))
        reviewed.setdefault(u, set()).add(item)
    counts = {"events": len(events), "users": len(users), "items": len(catalog), "cutoff_ts": cutoff,
              "skipped_events": sum(r["asin"] not in catalog for r in events)}
    return out, counts


@pytest.mark.data
@pytest.mark.slow
def test_ablation_matches_hand_rolled_replay_and_caches(analyzer, data_dir, data_file, tmp_path, monkeypatch):
    data_file(REVIEWS)
    encoded, analyze_calls, replays = [], [], []
    real_run, real_analyze, real_replay = analyzer.encoder._run, analyzer.analyze, replay_mod.replay

    def counting_run(texts, role, branches, rows=None):
        encoded.append(len(texts))
        return real_run(texts, role, branches, rows)

    def counting_analyze(texts):
        analyze_calls.append(len(texts))
        return real_analyze(texts)

    def recording_replay(rec, reviews, cutoff, analyses, k=10, progress=False):
        scored = real_replay(rec, reviews, cutoff, analyses, k, progress)
        replays.append((analyses, scored))
        return scored

    monkeypatch.setattr(analyzer.encoder, "_run", counting_run)
    monkeypatch.setattr(analyzer, "analyze", counting_analyze)
    monkeypatch.setattr(replay_mod, "replay", recording_replay)
    cfg = AblationConfig(limit_users=N_USERS, max_text_chars=MAX_CHARS, k=K, progress=False)

    result = run_ablation(data_dir, analyzer, tmp_path, cfg)

    assert 0 < sum(encoded) < 400, encoded  # keeps the test cheap on CPU
    assert analyze_calls
    v = result["variants"]
    assert set(v) == {"ids", "text", "sentiment"}
    assert result["predictions"] > 0
    assert {m["predictions"] for m in v.values()} == {result["predictions"]}
    for m in v.values():
        assert 0.0 <= m["NDCG@10"] <= m["HR@10"] <= 1.0
    # the same events are scored in every variant, and text changes what is recommended
    (_, ids_scored), (text_an, text_scored), (sent_an, sent_scored) = replays
    keys = [[(r.user, r.item, r.ts) for r, _ in s] for s in (ids_scored, text_scored, sent_scored)]
    assert keys[0] == keys[1] == keys[2]
    assert [top for _, top in ids_scored] != [top for _, top in sent_scored]

    # ids variant == the protocol written out again, list by list (so every user's lists too)
    hand, counts = _hand_rolled_ids(analyzer, data_dir, tmp_path)
    assert [(r.user, r.item, top) for r, top in ids_scored] == hand
    assert {key: result[key] for key in counts} == counts
    hit = [item in top for _, item, top in hand]
    gain = [1.0 / np.log2(top.index(item) + 2) if item in top else 0.0 for _, item, top in hand]
    assert v["ids"]["HR@10"] == pytest.approx(np.mean(hit))
    assert v["ids"]["NDCG@10"] == pytest.approx(np.mean(gain))

    # text: one analysis per review, sentiment neutralised in `text` only
    pairs = [(a, b) for a, b in zip(text_an, sent_an) if b is not None]
    assert pairs and all(a is not None for a, _ in pairs)
    assert all(a.sentiment == NEUTRALISED and all(c.sentiment == NEUTRALISED for c in a.clauses)
               and a.vector is b.vector for a, b in pairs)
    assert any(c.sentiment.polarity < 0.9 for _, b in pairs for c in b.clauses)

    # a second run reads the analyses and item vectors from the cache: no model call at all
    encoded.clear(), analyze_calls.clear()
    again = run_ablation(data_dir, analyzer, tmp_path, cfg)
    assert analyze_calls == [] and encoded == []
    assert again["variants"] == result["variants"]
    assert "ids" in replay_mod.format_ablation(again)


def test_missing_data_and_bad_config_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="reviews_Musical_Instruments_5"):
        run_ablation(tmp_path, analyzer=None)  # fails on the data before it needs a model
    with pytest.raises(ValueError, match="cutoff_quantile"):
        AblationConfig(cutoff_quantile=1.0)
    with pytest.raises(ValueError, match="limit_users"):
        AblationConfig(limit_users=0)
