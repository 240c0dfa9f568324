"""Three-class sentiment (negative / neutral / positive) on the encoder's embeddings.

First version: a linear probe (multinomial logistic regression) on frozen e5 embeddings, trained
on the MARC zh + en train files. The head is 384 x 3 floats, so the trained artifact ships with
the package and the encoder's single forward pass serves retrieval and sentiment together.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ecrec.learning.datasets import SENTIMENT_LABELS
from ecrec.text.language import detect_language
from ecrec.text.prepare import clean, split_clauses

log = logging.getLogger(__name__)

ARTIFACTS = Path(__file__).parents[1] / "artifacts"


def probe_path(model: str) -> Path:
    return ARTIFACTS / f"sentiment_probe_{model}.npz"


def branch_path(model: str) -> Path:
    return ARTIFACTS / f"sentiment_branch_{model}.safetensors"


def intent_path(model: str) -> Path:
    return ARTIFACTS / f"intent_branch_{model}.safetensors"


def intent_head_path(choice: str | Path | None, model: str) -> Path | None:
    """``None`` = the shipped intent branch where there is one, ``"none"`` = no intents, else a path."""
    if choice is None:
        return intent_path(model) if intent_path(model).exists() else None
    return None if str(choice) == "none" else Path(choice)


def head_path(choice: str | Path | None, model: str) -> Path:
    """Which sentiment head to serve: ``None`` = the shipped fine-tuned branch where there is one
    for the encoder (else its probe), ``"probe"`` / ``"branch"`` = the shipped ones, else a path."""
    if choice is None:
        return branch_path(model) if branch_path(model).exists() else probe_path(model)
    if str(choice) == "probe":
        return probe_path(model)
    if str(choice) == "branch":
        return branch_path(model)
    return Path(choice)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # (n, n_classes)


@dataclass
class LinearProbe:
    """softmax(x @ W + b) over ``labels``."""

    W: np.ndarray  # (dim, n_classes)
    b: np.ndarray  # (n_classes,)
    labels: tuple[str, ...] = SENTIMENT_LABELS
    info: dict = field(default_factory=dict)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        from ecrec.retrieval.index import check_vectors  # lazily: the text path runs without FAISS

        x = check_vectors(x, self.W.shape[0], "embeddings")
        return _softmax(x @ self.W + self.b)

    def save(self, path: str | Path) -> None:
        np.savez(path, W=self.W.astype(np.float32), b=self.b.astype(np.float32),
                 labels=np.array(self.labels), info=np.array(json.dumps(self.info)))

    @classmethod
    def load(cls, path: str | Path) -> "LinearProbe":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["W"], z["b"], tuple(str(s) for s in z["labels"]), json.loads(str(z["info"])))


def train_probe(x: np.ndarray, y: np.ndarray, n_classes: int = 3, weight_decay: float = 1e-4,
                epochs: int = 300, seed: int = 0) -> LinearProbe:
    """Full-batch L-BFGS on class-balanced cross-entropy; deterministic under ``seed``."""
    import torch

    from ecrec.retrieval.index import check_vectors

    torch.manual_seed(seed)
    X = torch.from_numpy(check_vectors(x, x.shape[1], "embeddings"))
    Y = torch.from_numpy(np.asarray(y, dtype=np.int64))
    counts = torch.bincount(Y, minlength=n_classes).float().clamp(min=1)
    weights = counts.sum() / (n_classes * counts)
    lin = torch.nn.Linear(X.shape[1], n_classes)
    torch.nn.init.zeros_(lin.weight), torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=epochs, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)

    def closure():
        opt.zero_grad()
        loss = loss_fn(lin(X), Y) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    W = lin.weight.detach().numpy().T.copy()
    return LinearProbe(W, lin.bias.detach().numpy().copy())


@dataclass(frozen=True)
class Sentiment:
    label: str
    probs: dict[str, float]

    @property
    def polarity(self) -> float:
        """p(positive) - p(negative), in [-1, 1]."""
        return self.probs["positive"] - self.probs["negative"]


@dataclass(frozen=True)
class Clause:
    text: str
    sentiment: Sentiment
    vector: np.ndarray  # (dim,)


@dataclass(frozen=True)
class Intent:
    """Customer-service intent of a whole text: one of the 27 Bitext intents, or ``none`` for text
    that is not a service request (a review, a product question, small talk)."""

    label: str
    confidence: float
    top: list[tuple[str, float]]  # the three likeliest, best first
    clarify: bool = False  # confidence under the branch's calibrated threshold: ask, don't guess


@dataclass(frozen=True)
class TextAnalysis:
    text: str
    language: str
    truncated: bool
    sentiment: Sentiment
    vector: np.ndarray  # (dim,) whole text
    clauses: list[Clause]
    intent: Intent | None = None  # when an intent branch is loaded
    model: str = ""  # the analyzer's version (``TextAnalyzer.version``) that produced this


class BranchHead:
    """A fine-tuned branch (top-K layer copies + head, see ``ecrec.text.classifier``)."""

    def __init__(self, branch, meta: dict):
        self.branch, self.info = branch, meta
        self.labels = tuple(meta["labels"])


def load_head(path: str | Path, encoder) -> LinearProbe | BranchHead:
    """A ``.npz`` linear probe or a ``.safetensors`` fine-tuned branch."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sentiment head not found: {path}")
    if path.suffix == ".npz":
        probe = LinearProbe.load(path)
        probe.info.setdefault("name", path.stem)
        return probe
    from ecrec.text.classifier import load_branch

    branch, meta = load_branch(path, encoder.model, getattr(encoder, "float_layers", None))
    branch = branch.to(encoder.device, encoder.dtype)
    if getattr(encoder, "quantized", False):  # the branch's layers run int8 like the trunk's
        encoder.quantize_module(branch.layers)
    return BranchHead(branch, meta)


@dataclass(frozen=True)
class AnalysisFailure:
    """One text of a batch that could not be analysed (the others in its batch still are).
    ``client_error``: the text itself was refused (a ``ValueError``); otherwise the model failed
    on it (out of memory, a kernel error) and the message is for the logs, not the client."""

    message: str
    client_error: bool = True


def analyze_isolated(analyze, texts: Sequence[str]) -> list:
    """``analyze(texts)``; if the batch fails, each text again alone, so one bad text fails only
    itself: its slot holds an ``AnalysisFailure`` instead of a ``TextAnalysis``."""
    try:
        return list(analyze(list(texts)))
    except Exception:
        if len(texts) == 1:
            log.exception("analysing a text failed")
            return [_failure_message()]
    out = []
    for t in texts:
        try:
            out.extend(analyze([t]))
        except Exception:
            log.exception("analysing a text failed")
            out.append(_failure_message())
    return out


def _failure_message() -> AnalysisFailure:
    import sys

    e = sys.exc_info()[1]
    return AnalysisFailure(f"{type(e).__name__}: {e}"[:200], isinstance(e, ValueError))


class TextAnalyzer:
    """Encoder + sentiment head (+ optional intent branch): one batched forward pass per call gives
    vectors, sentiment and intent."""

    def __init__(self, encoder, head: LinearProbe | BranchHead, intent: BranchHead | None = None):
        if isinstance(head, LinearProbe) and head.W.shape[0] != encoder.dim:
            raise ValueError(f"head expects dim {head.W.shape[0]}, encoder gives {encoder.dim}")
        if intent is not None and not isinstance(intent, BranchHead):
            raise ValueError("the intent head must be a fine-tuned branch (.safetensors)")
        self.encoder, self.head, self.intent_head = encoder, head, intent

    @property
    def version(self) -> str:
        """Encoder model + sentiment head (+ intent branch) names, e.g.
        ``e5-small+sentiment-ft-k6+intent-ft``: what the metrics and ``/readyz`` call the model."""
        base = getattr(getattr(self.encoder, "config", None), "model", "encoder")
        names = [base + ("-int8" if getattr(self.encoder, "quantized", False) else ""), self.head.info.get("name", "head")]
        if self.intent_head is not None:
            names.append(self.intent_head.info.get("name", "intent"))
        return "+".join(names)

    def _raw_and_probs(self, texts: list[str], intent_rows: int | None = None) -> tuple[
            np.ndarray, np.ndarray, np.ndarray | None]:
        """Raw (unaligned) vectors, sentiment and intent probabilities in one forward pass; the
        intent branch runs on the first ``intent_rows`` texts only (whole texts, not clauses)."""
        heads = [h for h in (self.head, self.intent_head) if isinstance(h, BranchHead)]
        rows = [intent_rows if h is self.intent_head else None for h in heads]
        raw, logits = self.encoder.encode_with_branches(texts, "query", [h.branch for h in heads], rows)
        if isinstance(self.head, BranchHead):
            sent = _softmax(logits.pop(0))
        else:
            sent = self.head.predict_proba(raw)
        return raw, sent, (_softmax(logits[0]) if self.intent_head is not None else None)

    def _sentiments(self, p: np.ndarray) -> list[Sentiment]:
        return [Sentiment(self.head.labels[int(r.argmax())],
                          {lab: float(v) for lab, v in zip(self.head.labels, r)}) for r in p]

    def _intents(self, p: np.ndarray | None, n: int) -> list[Intent | None]:
        if p is None:
            return [None] * n
        labels = self.intent_head.labels
        threshold = float(self.intent_head.info.get("clarify_below", 0.0))
        out = []
        for r in p[:n]:
            top = np.argsort(-r)[:3]
            out.append(Intent(labels[int(top[0])], float(r[top[0]]), [(labels[int(i)], float(r[i])) for i in top],
                              float(r[top[0]]) < threshold))
        return out

    def sentiment(self, texts: Sequence[str]) -> list[Sentiment]:
        cleaned = [clean(t).text for t in texts]
        return self._sentiments(self._raw_and_probs(cleaned)[1])

    def intents(self, texts: Sequence[str]) -> list[Intent]:
        if self.intent_head is None:
            raise ValueError("no intent branch is loaded")
        cleaned = [clean(t).text for t in texts]
        _, logits = self.encoder.encode_with_branches(cleaned, "query", [self.intent_head.branch])
        return self._intents(_softmax(logits[0]), len(cleaned))

    def analyze(self, texts: Sequence[str]) -> list[TextAnalysis]:
        """Clean, split into clauses, encode texts and clauses together, classify all."""
        cleaned = [clean(t) for t in texts]
        clause_lists = [split_clauses(c.text) for c in cleaned]
        flat = [c.text for c in cleaned]
        for cl in clause_lists:
            flat.extend(cl if len(cl) > 1 else [])
        raw, probs, intent_probs = self._raw_and_probs(flat, len(cleaned))  # rows: texts, then clauses
        sents = self._sentiments(probs)  # the head reads raw states; retrieval the aligned vectors
        intents = self._intents(intent_probs, len(cleaned))
        x = self.encoder.align(raw, flat, "query")
        out, pos, version = [], len(cleaned), self.version
        for i, (c, cl) in enumerate(zip(cleaned, clause_lists)):
            if len(cl) > 1:
                clauses = [Clause(t, sents[pos + j], x[pos + j]) for j, t in enumerate(cl)]
                pos += len(cl)
            else:
                clauses = [Clause(c.text, sents[i], x[i])]
            out.append(TextAnalysis(c.text, detect_language(c.text), c.truncated, sents[i], x[i], clauses,
                                    intents[i], version))
        return out
