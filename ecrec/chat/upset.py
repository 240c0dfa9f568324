"""Is the shopper upset? The escalation rule's "negative for two turns", learned for chat.

The sentiment branch learned from product reviews, where a problem is a bad review: it gives a
calm "how do I cancel my order" p(negative) 0.85, and calls 68 % of calm service messages
negative. Thresholding its p(negative) does not separate anger from a calm problem report either
(recall 0.55 at 7 % false alarms on held-out messages). So chat reads *upset* from a small probe
on the message's vector and its sentiment probabilities, trained on labelled service messages
(``ecrec/data/chat_upset.jsonl``: angry ones against calm problem reports and requests, zh + en):
fitted on one half, measured on the other. Another encoder (another vector space) falls back to
the p(negative) threshold fitted on the same half.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ecrec.text.sentiment import ARTIFACTS, LinearProbe, train_probe

UPSET_FILE = Path(__file__).parent.parent / "data" / "chat_upset.jsonl"
FALLBACK_AT = 0.80  # p(negative), fitted for 5 % false alarms on the fitting half
WEIGHT_DECAY = 1e-4
SENTIMENT_ORDER = ("negative", "neutral", "positive")


def probe_path(model: str) -> Path:
    return ARTIFACTS / f"upset_probe_{model}.npz"


def upset_rows(path: Path = UPSET_FILE) -> tuple[list[dict], list[dict]]:
    """(fitting half, held-out half): every other row of each (language, label) group."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["lang"], r["upset"]), []).append(r)
    fit = [r for g in groups.values() for r in g[0::2]]
    held = [r for g in groups.values() for r in g[1::2]]
    return fit, held


def features(vector: np.ndarray, probs: dict[str, float]) -> np.ndarray:
    return np.concatenate([np.asarray(vector, np.float32), np.array([probs[k] for k in SENTIMENT_ORDER], np.float32)])


class UpsetDetector:
    def __init__(self, probe: LinearProbe | None = None, threshold: float = FALLBACK_AT):
        self.probe, self.threshold = probe, threshold

    @classmethod
    def load(cls, model: str, dim: int) -> "UpsetDetector":
        path = probe_path(model)
        if path.exists():
            probe = LinearProbe.load(path)
            if probe.W.shape[0] == dim + len(SENTIMENT_ORDER):
                return cls(probe, float(probe.info["threshold"]))
        return cls()

    def probability(self, analysis) -> float:
        if self.probe is None:
            return float(analysis.sentiment.probs["negative"])
        return float(self.probe.predict_proba(features(analysis.vector, analysis.sentiment.probs)[None])[0, 1])

    def __call__(self, analysis) -> bool:
        return self.probability(analysis) >= self.threshold


def calm_requests(data_dir: str | Path, every: int = 40) -> list[dict]:
    """Service requests as calm examples: the project's Chinese intent training utterances and every
    ``every``-th Bitext utterance (complaints left out: some are angry)."""
    from ecrec.learning.datasets import load_intents
    from ecrec.learning.intent_data import ZH_TRAIN, read_jsonl

    zh = [r for r in read_jsonl(ZH_TRAIN) if r["intent"] != "complaint"][::3]
    texts, intents = load_intents(data_dir)
    en = [t for t, i in list(zip(texts, intents))[::every] if i != "complaint"]
    return ([{"text": r["text"], "lang": "zh", "upset": False, "kind": "intent_train"} for r in zh]
            + [{"text": t, "lang": "en", "upset": False, "kind": "bitext"} for t in en])


def train_upset_probe(analyzer, rows: list[dict], calm: list[dict], max_false_alarms: float = 0.08) -> LinearProbe:
    """The probe on labelled ``rows`` plus ``calm`` requests, and its decision threshold: the
    lowest of 0.50, 0.55, ... 0.95 whose false-alarm rate on ``rows``, predicted by 2-fold cross-
    validation, is at most ``max_false_alarms``. Deterministic (full-batch L-BFGS from zeros)."""
    def x(rs):
        return np.stack([features(a.vector, a.sentiment.probs) for a in analyzer.analyze([r["text"] for r in rs])])

    xr, xc = x(rows), x(calm)
    yr = np.array([int(r["upset"]) for r in rows])

    def fit(idx):
        return train_probe(np.vstack([xr[idx], xc]), np.concatenate([yr[idx], np.zeros(len(xc), int)]),
                           n_classes=2, weight_decay=WEIGHT_DECAY)

    folds = (np.arange(len(rows))[0::2], np.arange(len(rows))[1::2])
    cv = np.zeros(len(rows))
    for train, test in (folds, folds[::-1]):
        cv[test] = fit(train).predict_proba(xr[test])[:, 1]
    grid = np.round(np.arange(0.5, 0.951, 0.05), 2)
    threshold = next((float(t) for t in grid if (cv[yr == 0] >= t).mean() <= max_false_alarms), float(grid[-1]))
    probe = fit(np.arange(len(rows)))
    probe.labels = ("calm", "upset")
    probe.info = {"name": "chat-upset", "rows": len(rows), "calm_requests": len(calm), "threshold": threshold,
                  "cv": upset_report(cv, yr.astype(bool), threshold), "weight_decay": WEIGHT_DECAY,
                  "trained_on": f"{UPSET_FILE.name} fitting half + calm service requests (calm_requests)"}
    return probe


def upset_report(p: np.ndarray, upset: np.ndarray, threshold: float) -> dict:
    p, y = np.asarray(p), np.asarray(upset, bool)
    flagged = p >= threshold
    return {"threshold": round(float(threshold), 4), "n": int(len(y)),
            "recall": round(float(flagged[y].mean()), 4) if y.any() else None,
            "false_alarms": round(float(flagged[~y].mean()), 4) if (~y).any() else None}
