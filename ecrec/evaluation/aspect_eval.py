"""Aspect quality per file (``ecrec eval-aspects``): polarity accuracy / macro-F1 over aspect rows
(gold spans given) and sentence-level extraction F1 (the set of extracted terms against the gold
set, lower-cased, micro over sentences; only files whose term sets are complete).

For the Chinese binary files a 3-class model is scored on whether it says positive or negative:
neutral counts as wrong, and macro-F1 averages the two classes the file has.
"""
from __future__ import annotations

import numpy as np

from ecrec.learning.aspect_data import POLARITY, Sentence


def polarity_scores(y: np.ndarray, pred: np.ndarray, binary: bool) -> dict:
    classes = [0, 2] if binary else [0, 1, 2]
    f1s = []
    for c in classes:
        tp = int(np.sum((pred == c) & (y == c)))
        fp, fn = int(np.sum((pred == c) & (y != c))), int(np.sum((pred != c) & (y == c)))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float((pred == y).mean()) if len(y) else 0.0, "macro_f1": float(np.mean(f1s)),
            "n": int(len(y)), "neutral_share": float((pred == 1).mean()) if len(y) else 0.0}


def _terms(text: str, spans) -> set[str]:
    return {text[a:b].strip().lower() for a, b, *_ in spans if text[a:b].strip()}


def extraction_scores(sentences: list[Sentence], extracted: list[list[tuple[int, int]]]) -> dict:
    tp = n_pred = n_gold = 0
    for s, ex in zip(sentences, extracted):
        gold, got = _terms(s.text, s.spans), _terms(s.text, ex)
        tp += len(gold & got)
        n_pred += len(got)
        n_gold += len(gold)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "sentences": len(sentences)}


def score_file(sentences: list[Sentence], results: list[dict]) -> dict:
    """Metrics of one file from ``run_branch`` results on its sentences (gold spans given, and
    the tagger's extraction). Keeps a few wrong rows as examples."""
    y, pred, two_way, wrong = [], [], [], []
    for s, r in zip(sentences, results):
        for (a, b, label), p in zip(s.spans, r["probs"]):
            guess = -1 if np.isnan(p).any() else int(np.argmax(p))  # cut off by truncation: wrong
            y.append(label), pred.append(guess)
            two_way.append(guess >= 0 and (2 if p[2] > p[0] else 0) == label)
            if guess != label and len(wrong) < 5:
                wrong.append({"text": s.text[:160], "term": s.text[a:b], "gold": POLARITY[label],
                              "predicted": POLARITY[guess] if guess >= 0 else None})
    binary = bool(sentences and sentences[0].binary)
    out = {"polarity": polarity_scores(np.asarray(y), np.asarray(pred), binary), "binary": binary,
           "polarity_errors": wrong}
    if binary:  # a diagnostic, not the protocol's figure: p(positive) > p(negative), neutral set aside
        out["polarity"]["two_way_accuracy"] = float(np.mean(two_way)) if two_way else 0.0
    complete = [i for i, s in enumerate(sentences) if s.complete]
    if complete:  # sentences whose term sets are whole (a few SemEval rows write a term apart from it)
        out["extraction"] = extraction_scores([sentences[i] for i in complete],
                                              [results[i]["extracted"] for i in complete])
        misses = []
        for i in complete:
            gold, got = _terms(sentences[i].text, sentences[i].spans), _terms(sentences[i].text, results[i]["extracted"])
            if gold != got and len(misses) < 5:
                misses.append({"text": sentences[i].text[:160], "gold": sorted(gold), "extracted": sorted(got)})
        out["extraction_errors"] = misses
    return out


def evaluate_files(base, tokenizer, branch, dev: dict[str, list[Sentence]], max_length: int = 256,
                   device="cpu") -> dict:
    """``score_file`` for every file of ``dev`` (name -> sentences), plus means over files."""
    from ecrec.text.aspects import run_branch

    report = {}
    for name, sentences in dev.items():
        res = run_branch(base, tokenizer, branch, [s.text for s in sentences],
                         [[(a, b) for a, b, _ in s.spans] for s in sentences], max_length, device=device)
        report[name] = score_file(sentences, res)
    pol = [r["polarity"]["accuracy"] for r in report.values()]
    ext = [r["extraction"]["f1"] for r in report.values() if "extraction" in r]
    summary = {"mean_polarity_accuracy": float(np.mean(pol)) if pol else 0.0,
               "mean_extraction_f1": float(np.mean(ext)) if ext else 0.0}
    summary["score"] = summary["mean_polarity_accuracy"] + summary["mean_extraction_f1"]
    return {"files": report, **summary}
