"""Aspect data (Ray-free): the shared APC files and the BDCI car posts as sentences with term spans.

APC format (PyABSA): 3 lines per row: the sentence with ``$T$`` where the term stands, the term,
``Positive|Negative|Neutral``. A sentence with several terms appears once per term; grouping the
rows by their restored text gives the sentence's gold term set (what extraction learns).
``aspects/zh/{camera,car,phone}`` separate every character by a space (removed here); ``hair``
puts a stray space after ``$T$`` (removed too). English SemEval rows are pre-tokenized text
(``battery life .``) and stay as they are.

The BDCI 2018 car posts carry an aspect *category* per post (动力, 价格, ...) and no term span:
the category's own word or one of its taxonomy synonyms found in the post stands in as the span
(posts where none is found are left out). Their term sets are incomplete, so they train and
score polarity only, never extraction.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

POLARITY = ("negative", "neutral", "positive")
TAGS = ("O", "B", "I")
TAXONOMY = Path(__file__).parents[1] / "data" / "aspect_taxonomy.json"

# file name -> (path under aspects/, language, space-separated characters, binary labels)
APC_FILES = {
    "zh_camera": ("zh/camera.train.txt", "zh", True, True),
    "zh_car": ("zh/car.train.txt", "zh", True, True),
    "zh_phone": ("zh/phone.train.txt", "zh", True, True),
    "zh_hair": ("zh/hair.train.txt", "zh", False, False),
    "en_laptops": ("en/laptops.train.txt", "en", False, False),
    "en_television": ("en/television.train.txt", "en", False, False),
    "en_tshirt": ("en/tshirt.train.txt", "en", False, False),
}
BDCI = "zh_bdci_car"
BDCI_PATH = "bdci_car_2018/train_2.csv"


@dataclass(frozen=True)
class AspectRow:
    """One APC row restored: the text and the term's character span in it, the polarity id."""

    text: str
    start: int
    end: int
    label: int

    @property
    def term(self) -> str:
        return self.text[self.start : self.end]


@dataclass
class Sentence:
    """A text with its terms ``(start, end, label)``. ``complete``: the spans are the whole gold
    term set (extraction trains and scores on it); ``binary``: labels say only negative/positive."""

    text: str
    spans: list[tuple[int, int, int]]
    source: str
    lang: str
    complete: bool = True
    binary: bool = False
    extra: dict = field(default_factory=dict)


def _label(word: str) -> int:
    word = word.strip().lower()
    if word not in POLARITY:
        raise ValueError(f"polarity must be Positive, Negative or Neutral, got {word!r}")
    return POLARITY.index(word)


def read_apc(path: str | Path, spaced: bool = False, lang: str = "en") -> list[AspectRow]:
    """The rows of an APC file, text restored and the term located by where ``$T$`` stood."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --data pointing at the shared data folder")
    lines = [ln.rstrip("\n\r") for ln in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) % 3:
        raise ValueError(f"{path}: {len(lines)} lines, not 3 per row")
    rows = []
    for i in range(0, len(lines), 3):
        sentence, term, polarity = lines[i : i + 3]
        parts = sentence.split("$T$")
        if len(parts) < 2:
            raise ValueError(f"{path}:{i + 1}: no $T$ in {sentence[:80]!r}")
        term = term.strip()
        if spaced:  # every character separated by a space: remove them all
            parts, term = [re.sub(r"\s+", "", p) for p in parts], re.sub(r"\s+", "", term)
        elif lang == "zh":  # a stray space beside the placeholder
            parts = [p if j == 0 else p.lstrip(" ") for j, p in enumerate(parts)]
            parts = [p if j == len(parts) - 1 else p.rstrip(" ") for j, p in enumerate(parts)]
        if not term:
            continue
        text = term.join(parts)
        at = 0  # a few rows hold the term twice ("$T$ 不 比 $T$ 差"): a row per place it stands
        for p in parts[:-1]:
            at += len(p)
            rows.append(AspectRow(text, at, at + len(term), _label(polarity)))
            at += len(term)
    return rows


def _key(text: str) -> str:
    """What identifies a sentence across its rows: no spaces, no quote marks (SemEval writes
    ``"sales" team`` in the term and ```` `` sales '' ```` in the sentence)."""
    return re.sub(r"[\s`'\"]", "", text).lower()


def _locate(text: str, term: str, near: int) -> int | None:
    """Start of the occurrence of ``term`` in ``text`` (case-insensitive) nearest ``near``."""
    starts = [m.start() for m in re.finditer(re.escape(term.lower()), text.lower())]
    return min(starts, key=lambda s: abs(s - near)) if starts else None


def group_rows(rows: list[AspectRow], source: str, lang: str, binary: bool) -> list[Sentence]:
    """Rows grouped into sentences. A row whose term is not found in its sentence's first
    restored text (written differently there) becomes a sentence of its own, marked incomplete."""
    groups: dict[str, Sentence] = {}
    loose = []
    for r in rows:
        s = groups.setdefault(_key(r.text), Sentence(r.text, [], source, lang, True, binary))
        if r.text == s.text:
            start = r.start
        else:
            start = _locate(s.text, r.term, r.start)
        if start is None:
            loose.append(Sentence(r.text, [(r.start, r.end, r.label)], source, lang, False, binary))
            continue
        span = (start, start + len(r.term), r.label)
        if all(sp[:2] != span[:2] for sp in s.spans):
            s.spans.append(span)
    out = list(groups.values()) + loose
    for s in out:
        s.spans.sort()
    return out


def load_taxonomy(path: str | Path = TAXONOMY) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_bdci(data_dir: str | Path, taxonomy: dict | None = None) -> list[Sentence]:
    """BDCI car posts: one sentence per post, a span per (category, polarity) where the category
    word or a synonym is in the post (the earliest such occurrence). Polarity only."""
    path = Path(data_dir) / "aspects" / BDCI_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --data pointing at the shared data folder")
    tax = taxonomy or load_taxonomy()
    posts: dict[str, Sentence] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            text = row["content"].strip()
            subject = row["subject"].strip()
            words = [subject] + tax["aspects"][tax["bdci_subjects"][subject]]["zh"]
            hits = [(text.find(w), -len(w), w) for w in words if w and text.find(w) >= 0]
            if not text or not hits:
                continue
            at, _, w = min(hits)
            s = posts.setdefault(row["content_id"], Sentence(text, [], BDCI, "zh", False, False))
            label = {"-1": 0, "0": 1, "1": 2}[row["sentiment_value"].strip()]
            if all(sp[:2] != (at, at + len(w)) for sp in s.spans):
                s.spans.append((at, at + len(w), label))
    return [s for s in posts.values() if s.spans]


def load_file(data_dir: str | Path, name: str) -> list[Sentence]:
    if name == BDCI:
        return read_bdci(data_dir)
    rel, lang, spaced, binary = APC_FILES[name]
    return group_rows(read_apc(Path(data_dir) / "aspects" / rel, spaced, lang), name, lang, binary)


def split_file(sentences: list[Sentence], dev_frac: float, seed: int) -> tuple[list[Sentence], list[Sentence]]:
    """(train, dev): a seeded ``dev_frac`` of the file's sentences held out."""
    order = np.random.default_rng(seed).permutation(len(sentences))
    n = int(round(len(sentences) * dev_frac))
    dev = sorted(order[:n].tolist())
    held = set(dev)
    return [sentences[i] for i in range(len(sentences)) if i not in held], [sentences[i] for i in dev]


def aspect_splits(data_dir: str | Path, dev_frac: float = 0.15, seed: int = 0, files=None,
                  train_limit: int | None = None, bdci_limit: int | None = 3000) -> tuple[list[Sentence], dict]:
    """Training sentences of every file, and each file's dev split by name (never trained on).
    ``train_limit`` / ``bdci_limit`` cap the training sentences per file (dev stays whole)."""
    files = list(files or [*APC_FILES, BDCI])
    train, dev = [], {}
    for i, name in enumerate(files):
        tr, dv = split_file(load_file(data_dir, name), dev_frac, seed + i)
        cap = bdci_limit if name == BDCI else train_limit
        if cap is not None:
            tr = tr[:cap]
        train += tr
        dev[name] = dv
    return train, dev


# ---- tokens <-> characters ------------------------------------------------------------------

def token_ranges(offsets, prefix_len: int, text: str) -> list[tuple[int, int] | None]:
    """Each token's character range in ``text`` (the tokenizer saw ``prefix + text``), spaces
    trimmed; ``None`` for special tokens, the prefix and tokens that are only a space."""
    out = []
    for a, b in offsets:
        a, b = max(a - prefix_len, 0), b - prefix_len
        if b <= 0 or a >= b:
            out.append(None)
            continue
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        out.append((a, b) if a < b else None)
    return out


def spans_to_tags(ranges: list[tuple[int, int] | None], spans) -> list[int]:
    """BIO ids per token: a token overlapping a span is B (its first) or I; others O (0)."""
    tags = [0] * len(ranges)
    for start, end, *_ in spans:
        first = True
        for i, r in enumerate(ranges):
            if r is not None and r[0] < end and r[1] > start:
                tags[i] = 1 if first else 2
                first = False
    return tags


def tags_to_spans(ranges: list[tuple[int, int] | None], tags) -> list[tuple[int, int]]:
    """Character spans of the B/I runs (an I without a B opens a span); tokens without a range
    neither open nor close one."""
    spans, cur = [], None
    for r, t in zip(ranges, tags):
        if r is None:
            continue
        if t == 1 or (t == 2 and cur is None):
            if cur is not None:
                spans.append(cur)
            cur = [r[0], r[1]]
        elif t == 2:
            cur[1] = r[1]
        elif cur is not None:
            spans.append(cur)
            cur = None
    if cur is not None:
        spans.append(cur)
    return [(a, b) for a, b in spans]
