"""Content (buying guides, articles, editors' reviews): the second collection a shopper sees.

It is built like the catalog: documents are embedded as passages into a FAISS index of their
own (``VectorIndex``, keyed by content id and filtered by language), kept in step with edits,
and ranked by the same profile the products are ranked by:

    score(d) = max over the profile's interests of cos(d, interest)          (as products)
             - avoid_weight * max(0, cos(d, avoid))
             + link_weight * (the shopper's engagement with the items d links to, capped at 1)
             + shown_weight * (share of the shopper's current product recommendations that d
                               links, or that are in d's category, half each)

The last term ties the guides to the products beside them: a review that says "this phone's
camera is great" sends both the rail and the guides to camera phones, where cosines alone rank a
camera-phone guide and a full-frame camera guide within 0.01 of each other.

A cold profile gets the newest documents. ``related`` serves a product page: the documents that
link the item first, then the nearest ones of its category, then the nearest ones at all.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Iterable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ecrec.retrieval.index import Filters, ItemMeta, VectorIndex
from ecrec.text.language import is_chinese

DEMO_CONTENT = Path(__file__).resolve().parents[1] / "data" / "demo_content.jsonl"
Kind = Literal["guide", "article", "review"]


class Content(BaseModel):
    """One document. ``category`` is a path like a product's; ``item_ids`` are the products it is about."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=128, pattern=r"^[\w.:-]+$")
    title: str = Field(min_length=1, max_length=300)
    body: str = Field(min_length=1, max_length=20_000)
    language: str = Field(default="", max_length=16, description="zh, en, ...; empty: detected from the text")
    kind: Kind = "guide"
    category: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=8)
    item_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list, max_length=50)
    created_at: float = Field(default_factory=time.time, ge=0, allow_inf_nan=False)

    @field_validator("title", "body")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()

    def model_post_init(self, _) -> None:
        if not self.language:  # frozen: set through the instance dict once, at construction
            object.__setattr__(self, "language", "zh" if is_chinese(self.title + self.body) else "en")

    @property
    def top_category(self) -> str:
        return self.category[0] if self.category else ""

    def embedding_text(self, body_chars: int = 400) -> str:
        """Title, category and the start of the body: what a guide is about (the encoder reads
        128 tokens; the opening of a guide states its topic)."""
        parts = [self.title, " / ".join(self.category), self.body[:body_chars]]
        return ". ".join(p for p in parts if p)

    def summary(self, chars: int = 110) -> str:
        text = " ".join(self.body.split())
        return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def load_content(path: str | Path) -> list[Content]:
    """A JSONL file of documents; a malformed line raises ``ValueError`` naming it."""
    import json

    docs, seen = [], set()
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = Content(**json.loads(line))
        except Exception as e:  # pydantic names the field
            raise ValueError(f"{path}: line {n}: {e}") from e
        if doc.id in seen:
            raise ValueError(f"{path}: line {n}: duplicate content id {doc.id!r}")
        seen.add(doc.id)
        docs.append(doc)
    return docs


@dataclass(frozen=True)
class ContentConfig:
    avoid_weight: float = 0.6
    link_weight: float = 0.15  # a guide about what the shopper just liked outranks a merely similar one
    shown_weight: float = 0.1  # guides about the products recommended beside them
    same_category: float = 0.05  # related(): a bonus for the item's own category
    candidates: int = 50  # per interest vector, from the index


@dataclass
class ContentHit:
    content_id: str
    score: float
    reason: str
    parts: dict = field(default_factory=dict)


class ContentLibrary:
    """Documents + their FAISS index. Not thread-safe: the owner holds its lock around calls."""

    def __init__(self, dim: int, config: ContentConfig = ContentConfig()):
        self.dim, self.config = dim, config
        self.docs: dict[str, Content] = {}
        # The index's filter key is the language: the one constraint every page asks for.
        self.index = VectorIndex(dim, "Flat")
        self.linking: dict[str, set[str]] = {}  # item id -> content ids that link it

    @classmethod
    def build(cls, docs: Iterable[Content], vectors: np.ndarray, dim: int, config: ContentConfig = ContentConfig()):
        lib = cls(dim, config)
        for d, v in zip(docs, vectors):
            lib.upsert(d, v)
        return lib

    def __len__(self) -> int:
        return len(self.docs)

    def upsert(self, doc: Content, vector: np.ndarray) -> None:
        if doc.id in self.docs:
            self.remove(doc.id)
        self.index.upsert([doc.id], np.asarray(vector, np.float32)[None, :], [ItemMeta(doc.language, 0.0, 1)])
        self.docs[doc.id] = doc
        for i in doc.item_ids:
            self.linking.setdefault(i, set()).add(doc.id)

    def remove(self, content_id: str) -> None:
        doc = self.docs.pop(content_id)
        self.index.remove([content_id])
        for i in doc.item_ids:
            self.linking.get(i, set()).discard(content_id)

    def _filters(self, language: str | None, exclude: Iterable[str] = ()) -> Filters:
        return Filters(categories=frozenset([language]) if language else None, exclude=frozenset(exclude))

    def _ok(self, content_id: str, language: str | None) -> bool:
        return content_id in self.docs and (not language or self.docs[content_id].language == language)

    # ---- for a shopper ---------------------------------------------------------------------
    def for_profile(self, profile, k: int, now: float, language: str | None = None,
                    titles: dict[str, str] | None = None, shown: list[tuple[str, str]] = ()) -> list[ContentHit]:
        """Documents ranked by ``profile`` (None or cold: the newest). ``titles`` names items in
        reasons; ``shown`` is the shopper's current product recommendations, (item id, top category)."""
        if not len(self):
            return []
        if profile is None or profile.is_cold:
            newest = sorted((d for d in self.docs.values() if self._ok(d.id, language)),
                            key=lambda d: (-d.created_at, d.id))[:k]
            return [ContentHit(d.id, 0.0, "新指南" if d.language == "zh" else "New guide", {"fresh": 1.0})
                    for d in newest]
        vecs = [profile.interest_vector(now), *profile.interest_centroids()]
        engaged = self._engagement(profile)
        cand = {cid for i in list(engaged) + [i for i, _ in shown] for cid in self.linking.get(i, ())
                if self._ok(cid, language)}
        n = min(len(self), max(self.config.candidates, 2 * k))
        for v in vecs:
            if np.any(v):
                cand.update(cid for cid, _ in self.index.search(v, n, self._filters(language)))
        ids = sorted(cand)
        if not ids:
            return []
        X = np.stack([self.index.vector(c) for c in ids])
        interest = (X @ np.stack(vecs).T).max(axis=1)
        avoid = np.maximum(0.0, X @ profile.avoid_vector())
        link = np.array([min(1.0, sum(engaged.get(i, 0.0) for i in self.docs[c].item_ids)) for c in ids])
        near = np.zeros(len(ids))
        if shown:
            for n_, c_ in enumerate(ids):
                d = self.docs[c_]
                linked = sum(i in d.item_ids for i, _ in shown)
                same = sum(bool(d.top_category) and cat == d.top_category for _, cat in shown)
                near[n_] = 0.5 * (linked + same) / len(shown)
        c = self.config
        score = interest - c.avoid_weight * avoid + c.link_weight * link + c.shown_weight * near
        order = np.argsort(-score, kind="stable")[:k]
        return [ContentHit(ids[j], float(score[j]), self._reason(ids[j], X[j], engaged, profile, titles or {}),
                           {"interest": float(interest[j]), "avoid": float(-c.avoid_weight * avoid[j]),
                            "link": float(c.link_weight * link[j]), "shown": float(c.shown_weight * near[j])})
                for j in order]

    @staticmethod
    def _engagement(profile) -> dict[str, float]:
        """Items the shopper engaged with, weighted: bought 1, liked by weight, merely seen 0.3."""
        out = {i: 0.3 for i in list(profile.seen)[-20:]}
        for i, w in profile.recent_positive.items():
            out[i] = max(out.get(i, 0.0), min(1.0, float(w)))
        for i in profile.purchased:
            out[i] = 1.0
        for i in profile.disliked:
            out.pop(i, None)
        return out

    def _reason(self, cid: str, x: np.ndarray, engaged: dict, profile, titles: dict) -> str:
        doc = self.docs[cid]
        zh = doc.language == "zh"
        linked = [i for i in doc.item_ids if engaged.get(i, 0) >= 0.5]
        if linked:
            t = titles.get(linked[0], linked[0])
            return f"关于你关注的「{t}」" if zh else f"About {t}, which you showed interest in"
        best, best_s = None, -np.inf
        for r in profile.reasons:
            if r.kind == "text" and r.weight > 0.1 and r.vector is not None:
                s = float(x @ r.vector.astype(np.float32))
                if s >= best_s:  # a tie (two clauses that fed one interest): the newer one
                    best, best_s = r, s
        if best is not None:
            return f"因为你说：{best.label}" if zh else f"Because you said: “{best.label}”"
        return "根据你的兴趣" if zh else "Based on your interests"

    # ---- for a product page ----------------------------------------------------------------
    def related(self, item_id: str, item_vec: np.ndarray, item_category: str, k: int,
                language: str | None = None) -> list[ContentHit]:
        """Documents for a product page: those linking the item, then the nearest (its category first)."""
        if not len(self):
            return []
        linked = [c for c in sorted(self.linking.get(item_id, ())) if self._ok(c, language)]
        hits = [ContentHit(c, 1.0 + float(self.index.vector(c) @ item_vec), "", {"linked": 1.0}) for c in linked]
        hits.sort(key=lambda h: -h.score)
        n = min(len(self), max(self.config.candidates, 2 * k))
        seen = set(linked)
        near = []
        for cid, s in self.index.search(item_vec, n, self._filters(language, seen)):
            bonus = self.config.same_category if item_category and self.docs[cid].top_category == item_category else 0.0
            near.append(ContentHit(cid, s + bonus, "", {"similarity": s, "category": bonus}))
        near.sort(key=lambda h: -h.score)
        out = (hits + near)[:k]
        for h in out:
            zh = self.docs[h.content_id].language == "zh"
            h.reason = (("本商品的指南" if zh else "A guide to this product") if "linked" in h.parts
                        else ("同类商品的指南" if zh else "About similar products"))
        return out

    def hit_json(self, h: ContentHit, explain: bool = False) -> dict:
        d = self.docs[h.content_id]
        out = {"content_id": d.id, "title": d.title, "summary": d.summary(), "language": d.language,
               "kind": d.kind, "category": d.category, "item_ids": d.item_ids, "score": round(h.score, 6),
               "reason": h.reason}
        if explain:
            out["parts"] = h.parts
        return out
