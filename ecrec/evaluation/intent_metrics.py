"""How sure the intent branch is, and where out-of-scope text lands: the figures the chat needs."""
from __future__ import annotations

import numpy as np

from ecrec.learning.intent_data import NONE, clarify_threshold
from ecrec.text.sentiment import _softmax as softmax


def confidence_report(logits: dict[str, np.ndarray], labels: dict[str, np.ndarray], names: list[str],
                      target: float = 0.98, threshold: float | None = None,
                      fit_rows: np.ndarray | None = None) -> dict:
    """The clarify threshold (fitted on ``dev``, or its ``fit_rows``, for ``target`` accuracy above it),
    and per set: the share below it, accuracy above
    and below it, and the share called ``none`` (out of scope)."""
    rows = np.arange(len(labels["dev"])) if fit_rows is None or not len(fit_rows) else fit_rows
    dev_p = softmax(logits["dev"][rows])
    t = clarify_threshold(dev_p.max(1), dev_p.argmax(1) == labels["dev"][rows], target) if threshold is None else threshold
    none = names.index(NONE) if NONE in names else -1
    out = {"clarify_below": t, "target_accuracy_above": target, "sets": {}}
    for name, z in logits.items():
        p = softmax(z)
        conf, pred, y = p.max(1), p.argmax(1), labels[name]
        low = conf < t
        out["sets"][name] = {
            "share_below": float(low.mean()),
            "accuracy_above": float((pred[~low] == y[~low]).mean()) if (~low).any() else None,
            "accuracy_below": float((pred[low] == y[low]).mean()) if low.any() else None,
            "share_none": float((pred == none).mean()),
            "n": int(len(y)),
        }
    return out
