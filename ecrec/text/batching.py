"""Which encoder rows share a forward pass.

A batch costs every row as many tokens as its longest row (padding), plus a fixed cost per pass
(kernel launches, Python, the per-layer work that does not scale with tokens). Rows are sorted by
token count, longest first, and the sorted order is cut into contiguous batches that minimise
``sum(overhead + rows x longest)`` (an exact dynamic programme over the cut points). On the 32
MARC reviews of ``bench/text_path.py`` (103 rows, 2,550 real tokens) fixed batches of 32 rows
sorted by characters padded to 6,477 tokens, since a Chinese character is about a token and an
English one a quarter of one; this plan pads to about 2,850 in 8 passes, and ``analyze`` of the
batch took 1.9 s instead of 4.2 s, with the same labels and vectors (``bench/text_path.py``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

# A forward pass's fixed cost, in padded tokens. On the batch above (2 cores): 0 gave 41 passes
# and 3.1 s, 12 gave 2.4 s; 32, 64 and 128 all gave 2.0-2.1 s (6-10 passes), within the noise.
PASS_OVERHEAD_TOKENS = 48


def plan_batches(lengths: Sequence[int], max_rows: int, overhead_tokens: int = PASS_OVERHEAD_TOKENS,
                 min_batches: int = 1) -> list[np.ndarray]:
    """Row indices of each batch, longest rows first: every row once, at most ``max_rows`` rows
    per batch, with the least padded tokens plus ``overhead_tokens`` per batch. ``min_batches``
    (the threads that run passes side by side): the costliest batch is halved until there are
    that many, where rows allow, so that no thread idles on a small call."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    n = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-n, kind="stable")
    sorted_n = n[order]
    count = len(order)
    best = np.zeros(count + 1, dtype=np.int64)  # best[j]: cost of the first j sorted rows
    cut = np.zeros(count + 1, dtype=np.int64)
    for j in range(1, count + 1):
        starts = np.arange(max(0, j - max_rows), j)
        costs = best[starts] + overhead_tokens + (j - starts) * sorted_n[starts]
        k = int(costs.argmin())
        best[j], cut[j] = costs[k], starts[k]
    batches, j = [], count
    while j > 0:
        batches.append(order[cut[j]:j])
        j = int(cut[j])
    batches = batches[::-1]
    while 0 < len(batches) < min_batches:
        costly = max(range(len(batches)), key=lambda i: len(batches[i]) * n[batches[i][0]])
        b = batches[costly]
        if len(b) < 2:
            break
        batches[costly: costly + 1] = [b[: len(b) // 2], b[len(b) // 2:]]
    return batches


def padded_tokens(lengths: Sequence[int], batches: Sequence[np.ndarray]) -> int:
    """Tokens the passes of ``batches`` compute, padding included."""
    n = np.asarray(lengths)
    return int(sum(len(b) * n[b].max() for b in batches if len(b)))
