"""Retraining from what shoppers wrote: labelled data out of the event store, and the promotion rule.

Reviews that carry a star rating are labelled sentiment data (1-2 negative, 3 neutral, 4-5
positive, as in the MARC protocol). The store keeps each user's recent log (older events are
compacted into snapshots), so the export is the recent reviews of every user still present;
erased users are gone from it. A candidate model is promoted only if it is not worse than the
serving one on a fixed holdout (``should_promote``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from ecrec.datasets import SENTIMENT_LABELS, stars_to_label
from ecrec.shard import decode_payload


def labelled_reviews(stores: Iterable, since: float = 0.0) -> Iterator[dict]:
    """``{"text", "label", "rating", "ts", "user_id"}`` for every review or feedback with a rating
    and a text in the stores' logs, stamped at or after ``since``."""
    for store in stores:
        for user_id in store.users():
            _, events = store.load_user(user_id)
            for _, payload in events:
                head, _ = decode_payload(payload)
                e = head.get("e") if head.get("k") == "event" else None
                if (e and e["type"] in ("review", "feedback") and e.get("rating") and e.get("text")
                        and e["ts"] >= since):
                    yield {"text": e["text"], "label": SENTIMENT_LABELS[stars_to_label(e["rating"])],
                           "rating": e["rating"], "ts": e["ts"], "user_id": user_id}


def should_promote(candidate: dict, serving: dict, metrics: tuple[str, ...] = ("macro_f1", "accuracy"),
                   tolerance: float = 0.0) -> tuple[bool, str]:
    """Promote when the candidate is not worse than the serving model on every metric of every
    holdout set (by more than ``tolerance``). ``candidate`` and ``serving`` map set -> metric ->
    value. Returns (promote?, why)."""
    worse = []
    for name, served in serving.items():
        if name not in candidate:
            return False, f"the candidate was not evaluated on {name!r}"
        for m in metrics:
            if candidate[name][m] < served[m] - tolerance:
                worse.append(f"{name} {m} {candidate[name][m]:.4f} < {served[m]:.4f}")
    if worse:
        return False, "worse than the serving model: " + "; ".join(worse)
    return True, "not worse on " + ", ".join(f"{n} ({', '.join(metrics)})" for n in serving)
