"""The lexical half of search: BM25 (``bm25s``) over titles, brands, categories and tags, with
Chinese word segmentation (``jieba``, search mode) so "降噪耳机" matches "主动降噪蓝牙耳机".

Items change at run time (PUT/DELETE): the index keeps the current documents and rebuilds the
BM25 matrix lazily, at the first query after a change, all pending changes together. Measured
on 2 busy cores: 13 ms for the demo's 305 items, 0.3 s for Scientific's 4,385; a query after
that, 0.2 ms. A catalog of millions needs an incremental index (issue 13).
"""
from __future__ import annotations

import logging
import re
import threading

import numpy as np

from ecrec.text.language import HAN, HAN_CHARS

_WORD = re.compile(rf"[a-z0-9]+(?:[.'-][a-z0-9]+)*|[{HAN_CHARS}]+")
STOPWORDS = frozenset("""a an and are as at be by for from has have i in is it its me my of on or our that the this
to was were with you your any some want need looking recommend please what which who how do does can
我 的 了 是 有 吗 呢 吧 和 与 要 想 买 一个 一款 什么 哪个 哪款 推荐 有没有 适合""".split())


def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def tokenize(text: str) -> list[str]:
    """Lower-cased words; Chinese runs cut by jieba's search mode (words and their sub-words);
    English plurals folded ("headphones" -> "headphone"). Stop words dropped."""
    out = []
    for m in _WORD.finditer(text.lower()):
        w = m.group(0)
        if HAN.match(w):
            out.extend(t for t in _jieba().lcut_for_search(w) if t.strip() and t not in STOPWORDS)
        elif w not in STOPWORDS:
            out.append(_singular(w))
    return out


def _singular(w: str) -> str:
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def item_document(item) -> str:
    """The fields a shopper's query words refer to (the description is left to the semantic half)."""
    return " ".join([item.title, item.brand, " ".join(item.category), " ".join(item.tags)])


class LexicalIndex:
    def __init__(self, items=(), k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self.docs: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._bm25 = None
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self.pending = 0
        for it in items:
            self.docs[it.id] = tokenize(item_document(it))
        self.pending = 1

    def upsert(self, item) -> None:
        with self._lock:
            self.docs[item.id] = tokenize(item_document(item))
            self.pending += 1

    def remove(self, item_id: str) -> None:
        with self._lock:
            if self.docs.pop(item_id, None) is not None:
                self.pending += 1

    def __len__(self) -> int:
        return len(self.docs)

    def _ensure(self) -> None:
        if not self.pending:
            return
        import bm25s

        ids = list(self.docs)
        bm25 = bm25s.BM25(k1=self.k1, b=self.b)
        bm25.index([self.docs[i] or ["\x00"] for i in ids], show_progress=False)
        self._bm25, self._ids, self._pos = bm25, ids, {i: n for n, i in enumerate(ids)}
        self.pending = 0

    def search(self, query: str, k: int, allowed=None) -> list[tuple[str, float]]:
        """The ``k`` best (item id, BM25 score) with a score above 0; ``allowed(id)`` filters."""
        tokens = tokenize(query)
        with self._lock:
            self._ensure()
            if not tokens or not self._ids:
                return []
            scores = self._bm25.get_scores(tokens)
            ids = self._ids
        order = np.argsort(-scores)
        out = []
        for n in order:
            if scores[n] <= 0 or len(out) >= k:
                break
            if allowed is None or allowed(ids[n]):
                out.append((ids[n], float(scores[n])))
        return out
