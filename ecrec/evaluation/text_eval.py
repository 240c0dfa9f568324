"""Sentiment and intent quality of a served head, measured through the serving path itself
(``TextEncoder.encode_with_branches``, the same cleaning, prefix and truncation as production).

``ecrec eval-text sentiment|intent [--head PATH]`` writes the report as JSON; the test sets are the
training task's (``ecrec.learning.finetune_data.load_task``): MARC test per language, the held-out
online_shopping categories, the Bitext paraphrase groups never trained on, the project's Chinese
test set and the out-of-scope sets.
"""
from __future__ import annotations

import time

import numpy as np

from ecrec.learning.finetune_data import FinetuneConfig, evaluate, evaluate_binary, load_task
from ecrec.text.prepare import clean


def head_logits(encoder, head, texts: list[str]) -> np.ndarray:
    """Class logits of a head as served: a fine-tuned branch, or the linear probe (log-probabilities)."""
    cleaned = [clean(t).text for t in texts]
    if not hasattr(head, "branch"):
        return np.log(head.predict_proba(encoder.encode(cleaned, "query", align=False)) + 1e-12)
    _, (logits,) = encoder.encode_with_branches(cleaned, "query", [head.branch])
    return logits


def sentiment_report(encoder, head, data_dir: str, limit: int | None = None, logits_out=None) -> dict:
    """Accuracy and macro-F1 on MARC test (zh, en); label and polarity accuracy on each held-out
    online_shopping category (neutral counts as wrong there). The dev splits (MARC dev, binary zh
    dev) are reported too, and with ``logits_out`` every set's logits and labels are saved (.npz),
    so a calibration can be chosen on dev without running the model again."""
    data = load_task(FinetuneConfig(task="sentiment", data_dir=str(data_dir), eval_test=True))
    k = len(head.branch.layers) if hasattr(head, "branch") else 0
    out = {"head": head.info.get("name"), "branch_layers": k, "sets": {}}
    saved = {}
    sets = {"dev": data.dev, "binary_dev": data.binary_dev, **data.tests}
    for name, split in sets.items():
        texts, y = split.texts, split.labels
        if limit:
            idx = np.random.default_rng(0).permutation(len(texts))[:limit]
            texts, y = [texts[i] for i in idx], y[idx]
        t0 = time.perf_counter()
        logits = head_logits(encoder, head, texts)
        m = evaluate(logits.argmax(1), y, data.labels)
        if split.binary is not None and split.binary.all():
            m.update(evaluate_binary(logits, y))
        m["seconds"] = time.perf_counter() - t0
        out["sets"][name] = m
        saved[f"{name}__logits"], saved[f"{name}__labels"] = logits, y
    if logits_out is not None:
        np.savez_compressed(logits_out, **saved)
    held = [m for k, m in out["sets"].items() if k.startswith("shopping_heldout_")]
    if held:
        n = sum(m["n"] for m in held)
        out["heldout_categories"] = {k: sum(m[k] * m["n"] for m in held) / n
                                     for k in ("label_accuracy", "polarity_accuracy", "neutral_share")}
        out["heldout_categories"]["n"] = n
    return out


def intent_report(encoder, head, data_dir: str) -> dict:
    """Accuracy and macro-F1 per test set, the share called ``none``, and the clarify threshold's
    effect (fitted on dev, stored in the branch)."""
    from ecrec.evaluation.intent_metrics import confidence_report

    data = load_task(FinetuneConfig(task="intent", data_dir=str(data_dir), eval_test=True))
    if list(head.labels) != data.labels:
        raise ValueError(f"the head's labels {list(head.labels)[:3]}... are not the task's")
    logits, labels, out = {}, {}, {"head": head.info.get("name"), "branch_layers": len(head.branch.layers),
                                   "sets": {}}
    for name, split in {"dev": data.dev, **data.tests}.items():
        logits[name], labels[name] = head_logits(encoder, head, split.texts), split.labels
        out["sets"][name] = evaluate(logits[name].argmax(1), split.labels, data.labels)
    conf = confidence_report(logits, labels, data.labels, threshold=head.info.get("clarify_below"))
    out["clarify_below"] = conf["clarify_below"]
    for name, m in out["sets"].items():
        m.update(conf["sets"][name])
    return out
