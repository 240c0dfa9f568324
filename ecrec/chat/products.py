"""Product mentions in chat, resolved against the catalog: rules find the candidates a message
names (an item id, a brand, a model word such as "X6"), the encoder picks among them."""
from __future__ import annotations

import re

import numpy as np

from ecrec.chat.slots import product_cues

_MODEL = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9]{2,12}$")


class ProductMentions:
    """The lexical index of a catalog's brands and model words (rebuilt when the catalog changes)."""

    def __init__(self, items: dict):
        self.by_brand: dict[str, set[str]] = {}
        self.by_model: dict[str, set[str]] = {}
        for item_id, it in items.items():
            if len(it.brand.strip()) >= 2:
                self.by_brand.setdefault(it.brand.strip(), set()).add(item_id)
            for tok in re.split(r"[\s/,()（）·]+", it.title):
                if _MODEL.match(tok):
                    self.by_model.setdefault(tok, set()).add(item_id)
        self.item_ids = set(items)

    def candidates(self, text: str) -> set[str]:
        ids, words = product_cues(text, set(self.by_brand), set(self.by_model), self.item_ids)
        if ids:
            return ids
        brands = set().union(*(self.by_brand[w] for w in words if w in self.by_brand))
        models = set().union(*(self.by_model[w] for w in words if w in self.by_model))
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
