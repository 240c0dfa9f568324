"""What text and sentiment add: Amazon Musical Instruments 2014 reviews replayed through the engine.

Protocol:
- Reviews are sorted by ``unixReviewTime`` (stable, so ties keep file order). The cutoff is the
  timestamp of the event at the ``cutoff_quantile`` (0.7) position; events at or after it are test.
- The dataset has no titles, so an item's text is the ``summary`` of its reviews dated before the
  cutoff, joined with ". ". Items without such a review are not in the catalog and all their
  events are skipped (``skipped_events``); they could never be retrieved anyway.
- Three variants, each a fresh ``Recommender`` (exploration off, no sequence retriever):
  ``ids`` ingests reviews as (item, stars) only; ``text`` adds the review text with every clause
  and the whole text set to p(positive) = 1, so text pulls by topic alone (the whole text's
  polarity also steers the item's own weight, which then averages the stars with +1);
  ``sentiment`` is the default rule, each clause weighted by its real polarity.
- Replay in time order: a test event whose user has an earlier replayed event, whose item is in
  the catalog and not reviewed by that user before is first scored (top-10 at the event's time:
  HR@10 and NDCG@10 of that item), then ingested like every other event. Scored events depend only
  on the data, so every variant scores the same ones.
- Each review text is analysed once (batched, cached on disk) and shared by the text variants;
  ``limit_users`` keeps the first N users by first appearance in the file (tests, quick looks).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ecrec.retrieval.catalog import Item
from ecrec.learning.datasets import DEFAULT_DATA
from ecrec.text.encoder import encode_cached
from ecrec.profiles.events import Event
from ecrec.evaluation.metrics import hit_rate_at_k, ndcg_at_k
from ecrec.retrieval.ranking import RankingConfig
from ecrec.recommender import Recommender, RecommenderConfig
from ecrec.text.sentiment import Sentiment, TextAnalysis, TextAnalyzer
from ecrec.text.prepare import TextError, clean

log = logging.getLogger(__name__)

DATASET = "amazon_musical_instruments_2014"
REVIEWS = Path("recsys") / DATASET / "reviews_Musical_Instruments_5.json.gz"
VARIANTS = ("ids", "text", "sentiment")
NEUTRALISED = Sentiment("positive", {"positive": 1.0, "neutral": 0.0, "negative": 0.0})


@dataclass(frozen=True)
class AblationConfig:
    cutoff_quantile: float = field(default=0.7, metadata={"help": "share of events (by time) before the cutoff"})
    k: int = field(default=10, metadata={"help": "list length scored (HR@k, NDCG@k)"})
    limit_users: int | None = field(default=None, metadata={"help": "first N users by first appearance"})
    max_text_chars: int = field(default=1000, metadata={"help": "review text truncated before analysis"})
    max_item_chars: int = field(default=1000, metadata={"help": "cap on an item's joined summaries"})
    batch: int = field(default=64, metadata={"help": "texts per analyzer call"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})

    def __post_init__(self) -> None:
        if not 0.0 < self.cutoff_quantile < 1.0:
            raise ValueError(f"cutoff_quantile must be in (0, 1), got {self.cutoff_quantile}")
        users = 1 if self.limit_users is None else self.limit_users
        if min(self.k, self.max_text_chars, self.max_item_chars, self.batch, users) < 1:
            raise ValueError("k, max_text_chars, max_item_chars, batch and limit_users must be >= 1")


@dataclass(frozen=True)
class Review:
    user: str
    item: str
    rating: int
    ts: float
    summary: str
    text: str | None  # truncated review text; None when nothing is left after cleaning


def _usable(text: str) -> str | None:
    try:
        clean(text)  # the analyzer cleans too: a text it would reject is no text
    except TextError:
        return None
    return text


def load_reviews(data_dir: str | Path = DEFAULT_DATA, limit_users: int | None = None,
                 max_text_chars: int = 1000) -> list[Review]:
    """The reviews in time order (stable), optionally of the first ``limit_users`` users only."""
    path = Path(data_dir) / REVIEWS
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass the shared data folder (holding {REVIEWS})")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if limit_users is not None:
        keep = set(list(dict.fromkeys(r["reviewerID"] for r in rows))[:limit_users])
        rows = [r for r in rows if r["reviewerID"] in keep]
    rows.sort(key=lambda r: r["unixReviewTime"])  # list.sort is stable
    return [Review(r["reviewerID"], r["asin"], int(r["overall"]), float(r["unixReviewTime"]),
                   (r.get("summary") or "").strip(), _usable((r.get("reviewText") or "")[:max_text_chars]))
            for r in rows]


def cutoff_ts(reviews: list[Review], quantile: float) -> float:
    """The timestamp of the event at the ``quantile`` position: a real event time, not interpolated."""
    if not reviews:
        raise ValueError("no reviews")
    ts = sorted(r.ts for r in reviews)
    return ts[min(int(quantile * len(ts)), len(ts) - 1)]


def build_catalog(reviews: list[Review], cutoff: float, max_chars: int = 1000) -> list[Item]:
    """Items reviewed before ``cutoff``, described by those reviews' summaries (first seen first)."""
    summaries: dict[str, list[str]] = {}
    for r in reviews:
        if r.ts < cutoff:  # later summaries would leak test-time reviews into the item vectors
            summaries.setdefault(r.item, []).extend([r.summary] if r.summary else [])
    return [Item(id=asin, title=(s[0] if s else asin)[:500], description=". ".join(s)[:max_chars],
                 created_at=0.0) for asin, s in summaries.items()]


def _model_key(analyzer: TextAnalyzer) -> str:
    enc, head = analyzer.encoder, analyzer.head
    name = getattr(head, "name", None) or (getattr(head, "info", None) or {}).get("name") or type(head).__name__
    return f"{enc.name}|{enc.config.max_length}|{enc.config.align_languages}|{name}"


def analyze_cached(analyzer: TextAnalyzer, texts: list[str], cache_dir: Path | None,
                   batch: int = 64, progress: bool = True) -> list[TextAnalysis]:
    """``analyzer.analyze`` in batches, pickled under ``cache_dir`` keyed by model and texts."""
    h = hashlib.sha256(_model_key(analyzer).encode() + b"\0")
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    path = Path(cache_dir) / f"analysis-{h.hexdigest()[:24]}.pkl" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            out = pickle.loads(path.read_bytes())
            if len(out) == len(texts):
                log.info("analyses of %d texts from %s", len(texts), path)
                return out
        except Exception as e:  # a stale or partial cache is recomputed, never trusted
            log.warning("ignoring unreadable analysis cache %s: %s", path, e)
    out = []
    for start in tqdm(range(0, len(texts), batch), desc="analyze", unit="batch", disable=not progress):
        out.extend(analyzer.analyze(texts[start : start + batch]))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # atomic: no reader ever sees half a file
        tmp.write_bytes(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
        tmp.replace(path)
    return out


def neutralised(a: TextAnalysis) -> TextAnalysis:
    """``a`` with every sentiment set to certain-positive: each clause pulls by its topic alone."""
    return dataclasses.replace(a, sentiment=NEUTRALISED,
                               clauses=[dataclasses.replace(c, sentiment=NEUTRALISED) for c in a.clauses])


class _Precomputed(Recommender):
    """Ingests with an analysis computed beforehand, through the engine's own ``ingest``."""

    pending: TextAnalysis | None = None

    def analyze(self, event: Event):
        return self.index.vector(event.item_id), self.pending


def replay(rec: Recommender, reviews: list[Review], cutoff: float, analyses: list | None,
           k: int = 10, progress: bool = False) -> list[tuple[Review, list[str]]]:
    """Replay ``reviews`` in order; returns each scored review with the top-``k`` ids recommended
    just before it was ingested. ``analyses[i]`` is review i's (None: ingested without text); a
    plain ``Recommender`` ignores them and analyses texts itself."""
    scored, history = [], {}
    for i, r in enumerate(tqdm(reviews, desc="replay", unit="event", disable=not progress)):
        if r.item not in rec.items:
            continue
        done = history.setdefault(r.user, set())
        if r.ts >= cutoff and done and r.item not in done:
            scored.append((r, [x.item_id for x in rec.recommend(r.user, k=k, now=r.ts)]))
        a = analyses[i] if analyses is not None else None
        rec.pending = a
        rec.ingest(Event(user_id=r.user, type="review", item_id=r.item, rating=r.rating, ts=r.ts,
                         text=r.text if a is not None else None))
        done.add(r.item)
    return scored


def run_ablation(data_dir: str | Path | None, analyzer: TextAnalyzer, cache_dir: Path | None = None,
                 config: AblationConfig = AblationConfig()) -> dict:
    """Run the three variants (see the module docstring); ``data_dir`` None = ``DEFAULT_DATA``.

    Raises:
        FileNotFoundError: when the reviews file is not under ``data_dir``.
    """
    t0 = time.perf_counter()
    reviews = load_reviews(data_dir or DEFAULT_DATA, config.limit_users, config.max_text_chars)
    cutoff = cutoff_ts(reviews, config.cutoff_quantile)
    items = build_catalog(reviews, cutoff, config.max_item_chars)
    X = encode_cached(analyzer.encoder, [it.embedding_text() for it in items], "passage", cache_dir)
    in_catalog = {it.id for it in items}
    kept = [r for r in reviews if r.item in in_catalog]
    found = iter(analyze_cached(analyzer, [r.text for r in kept if r.text is not None], cache_dir,
                                config.batch, config.progress))
    real = [next(found) if r.text is not None else None for r in kept]  # aligned with `kept`
    per_variant = {"ids": None, "text": [a and neutralised(a) for a in real], "sentiment": real}
    variants, n_pred = {}, 0
    for name in VARIANTS:
        rec = _Precomputed(analyzer, RecommenderConfig(ranking=RankingConfig(explore_share=0.0),
                                                       sequence_model="none"), cache_dir)
        rec.add_items(items, X)
        scored = replay(rec, kept, cutoff, per_variant[name], config.k, config.progress)
        n_pred = len(scored)
        hr = [hit_rate_at_k(top, {r.item}, config.k) for r, top in scored]
        nd = [ndcg_at_k(top, {r.item}, config.k) for r, top in scored]
        variants[name] = {f"HR@{config.k}": float(np.mean(hr)) if hr else 0.0,
                          f"NDCG@{config.k}": float(np.mean(nd)) if nd else 0.0, "predictions": n_pred}
        log.info("%s: %s", name, variants[name])
    return {"dataset": DATASET, "events": len(reviews), "predictions": n_pred,
            "users": len({r.user for r in reviews}), "items": len(items),
            "skipped_events": len(reviews) - len(kept), "cutoff_ts": cutoff, "variants": variants,
            "seconds": round(time.perf_counter() - t0, 2)}


def format_ablation(result: dict) -> str:
    """A small table: one row per variant."""
    cut = time.strftime("%Y-%m-%d", time.gmtime(result["cutoff_ts"]))
    lines = [f"{result['dataset']}: {result['events']} events ({result['skipped_events']} skipped), "
             f"{result['users']} users, {result['items']} items, cutoff {cut}, "
             f"{result['predictions']} predictions, {result['seconds']:.0f}s"]
    keys = [key for key in next(iter(result["variants"].values())) if key != "predictions"]
    lines.append(f"{'variant':<10}" + "".join(f"{key:>10}" for key in keys))
    for name, m in result["variants"].items():
        lines.append(f"{name:<10}" + "".join(f"{m[key]:>10.4f}" for key in keys))
    return "\n".join(lines)
