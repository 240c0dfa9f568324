"""Aspect-level understanding: which words of a review name a property of the product (aspect
terms) and how the review feels about each (negative / neutral / positive), zh + en.

One branch of the shared e5 trunk, like sentiment and intent (``ecrec.text.classifier``): the
frozen layers ``[0, L - K)`` run once; a copy of the top K layers, trained, gives token states H.
On H two small heads:

- a token tagger (BIO over the tokenizer's tokens, mapped back to character offsets) extracts
  the terms, and
- a span-pooled polarity head classifies each term, extracted or given: the span's mean state s,
  an attention read of the sentence with s as the query (c: what the text says about *this*
  term, so "拍照很好，但电池不行" gives the two terms different contexts) and the sentence mean g,
  ``head([s; c; g])`` -> 3 classes.

Every term of a text comes out of the same branch pass, so a text costs one trunk pass (shared
with the other branches when served together) plus K/L of a pass, whatever its number of terms.
Terms map to an aspect of ``ecrec/data/aspect_taxonomy.json``; a term outside it keeps itself.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ecrec.learning.aspect_data import POLARITY, TAGS, load_taxonomy, tags_to_spans, token_ranges
from ecrec.text.classifier import mean_pool, run_layer, trunk_forward

ASPECT_FORMAT = 1
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
PREFIX = "query: "


def aspect_path(model: str = "e5-small") -> Path:
    return ARTIFACTS / f"aspect_branch_{model}.safetensors"


class AspectBranch(nn.Module):
    """Top-K layer copies + the BIO tagger + the span polarity head."""

    def __init__(self, layers: nn.ModuleList, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.layers = layers
        self.drop = nn.Dropout(dropout)
        self.tagger = nn.Linear(hidden, len(TAGS))
        self.query = nn.Linear(hidden, hidden)
        self.head = nn.Linear(3 * hidden, len(POLARITY))

    def states(self, h: torch.Tensor, mask4) -> torch.Tensor:
        for layer in self.layers:
            h = run_layer(layer, h, mask4)
        return h  # (b, t, d)

    def tag_logits(self, states: torch.Tensor) -> torch.Tensor:
        return self.tagger(self.drop(states))  # (b, t, 3)

    def span_logits(self, states: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                    span_mask: torch.Tensor) -> torch.Tensor:
        """Polarity logits ``(n, 3)`` of n spans: span j lies in text ``rows[j]`` over the tokens
        where ``span_mask[j]`` (n, t) is 1."""
        h, keep = states[rows], attention_mask[rows].to(torch.bool)
        m = span_mask.to(h.dtype).unsqueeze(-1)
        s = (h * m).sum(1) / m.sum(1).clamp(min=1)
        scores = torch.einsum("nd,ntd->nt", self.query(s), h) / math.sqrt(h.shape[-1])
        a = torch.softmax(scores.masked_fill(~keep, torch.finfo(scores.dtype).min), dim=-1)
        c = torch.einsum("nt,ntd->nd", a, h)
        g = mean_pool(h, keep.long())
        return self.head(self.drop(torch.cat([s, c, g], dim=-1)))


def new_branch(base, branch_layers: int, dropout: float = 0.1) -> AspectBranch:
    """A branch starting from the trunk's own top ``branch_layers`` layers."""
    n = base.config.num_hidden_layers
    if not 1 <= branch_layers <= n:
        raise ValueError(f"branch_layers must be in [1, {n}], got {branch_layers}")
    layers = nn.ModuleList(copy.deepcopy(base.encoder.layer[n - branch_layers:]))
    for p in layers.parameters():
        p.requires_grad_(True)
    return AspectBranch(layers, base.config.hidden_size, dropout)


def save_aspect_branch(branch: AspectBranch, path: str | Path, info: dict) -> Path:
    """float16 safetensors with the metadata ``load_aspect_branch`` needs (``kind: aspects``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in branch.state_dict().items()}
    meta = {"format": ASPECT_FORMAT, "kind": "aspects", "labels": list(POLARITY), "tags": list(TAGS),
            "branch_layers": len(branch.layers), **info}
    save_file(state, str(path), metadata={"ecrec": json.dumps(meta, ensure_ascii=False)})
    return path


def load_aspect_branch(path: str | Path, base, templates=None) -> tuple[AspectBranch, dict]:
    from safetensors.torch import load_file

    from ecrec.text.classifier import branch_meta

    meta = branch_meta(path)
    if meta.get("kind") != "aspects" or meta.get("format") != ASPECT_FORMAT:
        raise ValueError(f"{path}: not an aspect branch (format {ASPECT_FORMAT})")
    k = meta["branch_layers"]
    source = base.encoder.layer if templates is None else templates
    layers = nn.ModuleList(copy.deepcopy(source[base.config.num_hidden_layers - k:]))
    branch = AspectBranch(layers, base.config.hidden_size)
    branch.load_state_dict({n: t.to(torch.float32) for n, t in load_file(str(path)).items()})
    return branch.eval(), meta


@dataclass
class Encoded:
    """Token ids of one text and each token's character range in the text."""

    ids: list[int]
    ranges: list[tuple[int, int] | None]


def encode_texts(tokenizer, texts: Sequence[str], max_length: int, prefix: str = PREFIX) -> list[Encoded]:
    enc = tokenizer([prefix + t for t in texts], truncation=True, max_length=max_length,
                    return_offsets_mapping=True)
    return [Encoded(ids, token_ranges(off, len(prefix), t))
            for ids, off, t in zip(enc["input_ids"], enc["offset_mapping"], texts)]


def span_tokens(ranges, start: int, end: int) -> list[int]:
    """Tokens overlapping the character span (empty when truncation cut it off)."""
    return [i for i, r in enumerate(ranges) if r is not None and r[0] < end and r[1] > start]


def pad_batch(rows: list[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        mask[i, : len(r.ids)] = 1
    return ids, mask


def spans_tensor(encoded: list[Encoded], spans: list[list[tuple[int, int]]], width: int):
    """(rows, span_mask) for every span that kept at least one token, and their (text, j) keys."""
    rows, masks, keys = [], [], []
    for i, (e, sp) in enumerate(zip(encoded, spans)):
        for j, (a, b) in enumerate(sp):
            toks = span_tokens(e.ranges, a, b)
            if toks:
                m = torch.zeros(width)
                m[toks] = 1
                rows.append(i), masks.append(m), keys.append((i, j))
    if not rows:
        return None, None, keys
    return torch.tensor(rows), torch.stack(masks), keys


@torch.no_grad()
def run_branch(base, tokenizer, branch: AspectBranch, texts: Sequence[str], spans=None, max_length: int = 256,
               batch_size: int = 32, device="cpu") -> list[dict]:
    """Per text: ``extracted`` character spans (the tagger's) and ``probs`` (one row of
    negative/neutral/positive per span of ``spans[i]``, or per extracted span when ``spans`` or
    ``spans[i]`` is None; NaN where truncation cut a span off). Length-sorted batches; one branch pass per text."""
    branch.eval()
    encoded = encode_texts(tokenizer, texts, max_length)
    split = base.config.num_hidden_layers - len(branch.layers)
    out: list[dict] = [{} for _ in texts]
    order = np.argsort([-len(e.ids) for e in encoded], kind="stable")
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size].tolist()
        rows = [encoded[i] for i in idx]
        ids, mask = pad_batch(rows, tokenizer.pad_token_id or 0)
        ids, mask = ids.to(device), mask.to(device)
        h, mask4 = trunk_forward(base, ids, mask, split)
        states = branch.states(h, mask4)
        tags = branch.tag_logits(states).argmax(-1).cpu().numpy()
        extracted = [tags_to_spans(r.ranges, t[: len(r.ids)]) for r, t in zip(rows, tags)]
        wanted = [ex if spans is None or spans[i] is None else list(spans[i]) for ex, i in zip(extracted, idx)]
        probs = [np.full((len(w), len(POLARITY)), np.nan, np.float32) for w in wanted]
        r_t, m_t, keys = spans_tensor(rows, wanted, ids.shape[1])
        if r_t is not None:
            p = torch.softmax(branch.span_logits(states, mask, r_t.to(device), m_t.to(device)).float(), -1)
            for (i, j), row in zip(keys, p.cpu().numpy()):
                probs[i][j] = row
        for k, i in enumerate(idx):
            out[i] = {"extracted": extracted[k], "probs": probs[k]}
    return out


class Taxonomy:
    """Term -> aspect: the aspect with the longest synonym the term contains (case-insensitive),
    within a category's aspects when one is named; ``None`` for a term outside the taxonomy."""

    def __init__(self, raw: dict | None = None):
        raw = raw or load_taxonomy()
        self.categories = {c: list(a) for c, a in raw.get("categories", {}).items()}
        self.synonyms = [(w.lower(), aspect) for aspect, langs in raw["aspects"].items()
                         for words in langs.values() for w in words]
        self.synonyms.sort(key=lambda x: -len(x[0]))

    def aspect(self, term: str, category: str | None = None) -> str | None:
        allowed = self.categories.get(category) if category else None
        t = term.lower()
        for w, aspect in self.synonyms:
            if (allowed is None or aspect in allowed) and (w == t or (w in t and _word_inside(w, t))):
                return aspect
        return None


def _word_inside(word: str, term: str) -> bool:
    """A synonym inside a longer term: anywhere for Chinese, on word boundaries for Latin text."""
    if not word.isascii():
        return True
    import re

    return re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", term) is not None


@dataclass(frozen=True)
class AspectTerm:
    term: str
    start: int
    end: int
    aspect: str  # the taxonomy's aspect, or the term itself (lower-cased) outside it
    label: str | None  # None: a given term that is not in the text (or cut off by truncation)
    probs: dict[str, float] | None
    given: bool

    def to_dict(self) -> dict:
        return {"term": self.term, "start": self.start, "end": self.end, "aspect": self.aspect,
                "label": self.label, "probs": self.probs, "given": self.given}


class AspectAnalyzer:
    """Aspect terms and their polarity for texts, on an encoder's trunk (``TextEncoder``)."""

    def __init__(self, encoder, branch: AspectBranch, meta: dict | None = None, taxonomy: Taxonomy | None = None,
                 max_length: int = 256):
        self.encoder, self.branch, self.info = encoder, branch, meta or {}
        self.taxonomy, self.max_length = taxonomy or Taxonomy(), max_length

    @classmethod
    def load(cls, encoder, path: str | Path | None = None) -> "AspectAnalyzer":
        path = Path(path) if path else aspect_path(encoder.config.model)
        branch, meta = load_aspect_branch(path, encoder.model, getattr(encoder, "float_layers", None))
        branch = branch.to(encoder.device, encoder.dtype)
        if getattr(encoder, "quantized", False):
            encoder.quantize_module(branch.layers)
        return cls(encoder, branch, meta, max_length=int(meta.get("max_length", 256)))

    def analyze(self, texts: Sequence[str], given: Sequence[Sequence[str] | None] | None = None,
                category: str | None = None) -> list[list[AspectTerm]]:
        """Per text its terms. ``given[i]`` (terms to classify in text i, found case-insensitively,
        first occurrence) replaces extraction for that text; ``None`` extracts. Offsets index the
        cleaned text (``ecrec.text.prepare.clean``)."""
        from ecrec.text.prepare import clean

        cleaned = [clean(t).text for t in texts]
        given = list(given) if given is not None else [None] * len(cleaned)
        if len(given) != len(cleaned):
            raise ValueError(f"given has {len(given)} entries for {len(cleaned)} texts")
        spans, located = [], []
        for text, terms in zip(cleaned, given):
            if terms is None:
                spans.append(None), located.append(None)
                continue
            found = [(text.lower().find(t.lower()), t) for t in terms if t and t.strip()]
            located.append(found)
            spans.append([(a, a + len(t)) if a >= 0 else (0, 0) for a, t in found])
        res = run_branch(self.encoder.model, self.encoder.tokenizer, self.branch, cleaned, spans, self.max_length,
                         device=self.encoder.device)
        out = []
        for i, text in enumerate(cleaned):
            terms = []
            is_given = spans[i] is not None
            for k, ((a, b), p) in enumerate(zip(spans[i] if is_given else res[i]["extracted"], res[i]["probs"])):
                missing = is_given and located[i][k][0] < 0
                term = located[i][k][1] if missing else text[a:b]
                ok = not missing and not np.isnan(p).any()
                probs = {lab: float(v) for lab, v in zip(POLARITY, p)} if ok else None
                aspect = self.taxonomy.aspect(term, category) or term.lower()
                terms.append(AspectTerm(term, a if not missing else -1, b if not missing else -1, aspect,
                                        POLARITY[int(np.argmax(p))] if ok else None, probs, is_given))
            out.append(terms)
        return out
