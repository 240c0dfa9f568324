"""Product mentions in chat, resolved against the catalog: rules find the candidates a message
names (an item id, a brand, a model word such as "X6"), the encoder picks among them."""
from __future__ import annotations

import re

import numpy as np

_MODEL = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9]{2,12}$")


class ProductMentions:
    """The lexical index of a catalog's brands and model words (rebuilt when the catalog changes).
    Latin words match as whole words ("Tempo" is not in "temporarily"), Chinese brands as substrings;
    all of them in one precompiled pattern per script."""

    def __init__(self, items: dict):
        self.by_word: dict[str, set[str]] = {}  # lower-cased brand or model word -> item ids
        self.brands: set[str] = set()
        for item_id, it in items.items():
            brand = it.brand.strip()
            if len(brand) >= 2:
                self.by_word.setdefault(brand.lower(), set()).add(item_id)
                self.brands.add(brand.lower())
            for tok in re.split(r"[\s/,()（）·]+", it.title):
                if _MODEL.match(tok):
                    self.by_word.setdefault(tok.lower(), set()).add(item_id)
        self.item_ids = set(items)
        latin = sorted((w for w in self.by_word if w.isascii()), key=len, reverse=True)
        other = sorted((w for w in self.by_word if not w.isascii()), key=len, reverse=True)
        self._latin = re.compile(r"(?<![a-z0-9])(" + "|".join(map(re.escape, latin)) + r")(?![a-z0-9])") if latin else None
        self._other = re.compile("|".join(map(re.escape, other))) if other else None
        self._ids = re.compile(r"[\w-]+")

    def candidates(self, text: str) -> set[str]:
        ids = {i for i in self._ids.findall(text) if i in self.item_ids}
        if ids:
            return ids
        low = text.lower()
        words = set()
        for pattern in (self._latin, self._other):
            if pattern is not None:
                words.update(pattern.findall(low))
        brands = set().union(*(self.by_word[w] for w in words if w in self.brands))
        models = set().union(*(self.by_word[w] for w in words if w not in self.brands))
        if brands and models and brands & models:
            return brands & models
        return brands or models


def resolve(text: str, vector: np.ndarray | None, mentions: ProductMentions, items: dict, item_vector) -> dict | None:
    """The catalog item the message names, or None: among the lexical candidates, the one whose
    vector is nearest the message's (``item_vector(id)`` gives the index's vector)."""
    cands = sorted(c for c in mentions.candidates(text) if c in items)
    if not cands:
        return None
    if len(cands) == 1 or vector is None:
        best, score = cands[0], None
    else:
        sims = np.array([float(np.dot(item_vector(c), vector)) for c in cands])
        best, score = cands[int(sims.argmax())], float(sims.max())
    return {"item_id": best, "title": items[best].title, "score": score}
