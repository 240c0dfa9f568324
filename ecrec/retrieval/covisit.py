"""Item-to-item co-visitation ("bought together"), counted online from the event stream.

Each positive item event pairs the item with the shopper's recent items (``UserProfile.recent``
before the event). An item scores a shopper by the recency-weighted cosine of its co-visit
counts with their recent items: ``C_ij / (sqrt(n_i n_j) + shrink)``, the classic item-kNN
similarity, but kept current event by event instead of rebuilt in a batch job. On Amazon
Scientific it is the strongest single signal (docs/EVALUATION.md), and it is what text alone
cannot see: which items the same shoppers buy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class CoVisits:
    window: int = 50  # recent items paired with each new one
    pairs: dict = field(default_factory=dict)  # item -> {other item: count}
    counts: dict = field(default_factory=dict)  # item -> positive events

    def add(self, item: str, recent: list[str]) -> None:
        """One positive event on ``item`` by a shopper whose recent items were ``recent``."""
        self.counts[item] = self.counts.get(item, 0) + 1
        row = self.pairs.setdefault(item, {})
        for j in set(recent[-self.window:]):
            if j == item:
                continue
            row[j] = row.get(j, 0) + 1
            other = self.pairs.setdefault(j, {})
            other[item] = other.get(item, 0) + 1

    def merge(self, updates: list[tuple[str, list[str]]]) -> None:
        for item, recent in updates:
            self.add(item, recent)

    def scores(self, recent: list[str], decay: float = 0.7, shrink: float = 10.0,
               last: int = 20) -> dict[str, float]:
        """Item -> sum over the shopper's last ``last`` items j of decay**age * cos(j, item)."""
        out: dict[str, float] = {}
        recent = recent[-last:]
        for age, j in enumerate(reversed(recent)):
            row = self.pairs.get(j)
            if not row:
                continue
            w = decay ** age
            nj = self.counts.get(j, 1)
            for i, c in row.items():
                out[i] = out.get(i, 0.0) + w * c / (math.sqrt(nj * self.counts.get(i, 1)) + shrink)
        return out
