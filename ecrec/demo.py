"""In-process demo: one shopper's recommendations change as scripted events arrive."""
from __future__ import annotations

import time
from typing import TextIO

from ecrec.retrieval.catalog import load_demo_catalog
from ecrec.profiles.events import Event
from ecrec.recommender import Recommender, RecommenderConfig
from ecrec.retrieval.ranking import RankingConfig

SCRIPT = [
    ("review", {"item_id": "phones-001", "text": "这款手机拍照效果很好，但电池续航不太理想", "rating": 4}),
    ("click", {"item_id": "cameras-001"}),
    ("question", {"text": "Which headphones have the best noise cancelling for flights?"}),
    ("dislike", {"item_id": "headphones-003"}),
]


def _show(rec: Recommender, user: str, out: TextIO, k: int, now: float) -> None:
    for n, r in enumerate(rec.recommend(user, k=k, now=now), 1):
        it = rec.items[r.item_id]
        out.write(f"  {n:2d}. {it.title:<38s} {r.score:6.3f}  {r.reason}\n")


def run_demo(out: TextIO, k: int = 6) -> Recommender:
    t0 = time.perf_counter()
    config = RecommenderConfig(ranking=RankingConfig(explore_share=0.0))
    rec = Recommender.from_catalog(load_demo_catalog(), config)
    out.write(f"loaded {len(rec.items)} demo items in {time.perf_counter() - t0:.1f}s\n\n")
    user, now = "demo-shopper", time.time()
    out.write("A new shopper (cold start: popular and fresh items):\n")
    _show(rec, user, out, k, now)
    for n, (kind, fields) in enumerate(SCRIPT, 1):
        now += 60
        ev = Event(user_id=user, type=kind, ts=now, **fields)
        res = rec.ingest(ev)
        what = fields.get("text") or rec.items[fields["item_id"]].title
        out.write(f"\nEvent {n}: {kind} — {what}\n")
        if res.analysis is not None:
            for c in res.analysis.clauses:
                out.write(f"  clause «{c.text}»: {c.sentiment.label} ({c.sentiment.polarity:+.2f})\n")
        _show(rec, user, out, k, now)
    return rec
