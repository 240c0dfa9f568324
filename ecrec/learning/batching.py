"""Fast fine-tuning input: length-bucketed batches per worker and a cache of the frozen trunk.

Random batches of reviews pad every text to the longest of 32 (MARC: median 35 tokens, batches
padded to ~128), so most of the work is padding. ``LengthBuckets`` shuffles, then sorts by length
inside large chunks, so a batch holds texts of similar length; batch order is shuffled again.

The trunk (embeddings + the first ``L - K`` layers) is frozen and runs in eval mode, so its output
for a text never changes: ``TrunkCache`` keeps it (unpadded, per example) after the first epoch and
later epochs only run the K trained layers.
"""
from __future__ import annotations

import numpy as np
import torch


class LengthBuckets(torch.utils.data.Sampler):
    """Batches of example indices for one rank of ``world``.

    Each rank owns a fixed, seeded share of the examples (all ranks get the same number, so DDP
    steps stay in lock-step) and that share is what its trunk cache holds.
    """

    def __init__(self, lengths: list[int], batch_size: int, rank: int = 0, world: int = 1, seed: int = 0,
                 shuffle: bool = True, chunk_batches: int = 50):
        order = np.random.default_rng(seed).permutation(len(lengths)) if shuffle else np.arange(len(lengths))
        per_rank = len(lengths) // world
        self.indices = np.sort(order[rank::world][:per_rank])
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.shuffle, self.chunk = batch_size, seed, shuffle, batch_size * chunk_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        idx = rng.permutation(self.indices) if self.shuffle else self.indices
        out = []
        for s in range(0, len(idx), self.chunk):
            chunk = idx[s : s + self.chunk]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            out += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def __iter__(self):
        return iter([b.tolist() for b in self.batches()])

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)


class TrunkCache:
    """Frozen-trunk hidden states per example index (float32, unpadded, on CPU)."""

    def __init__(self, base, split: int):
        self.base, self.split = base, split
        self.states: dict[int, torch.Tensor] = {}
        self.hits = self.misses = 0

    @torch.no_grad()
    def batch(self, index: list[int], ids: torch.Tensor, mask: torch.Tensor):
        """(hidden, 4-d mask) for a padded batch, computing only the examples not seen before."""
        from ecrec.text.classifier import layer_mask, trunk_forward

        lengths = mask.sum(1).tolist()
        missing = [i for i, k in enumerate(index) if k not in self.states]
        if missing:
            sub = torch.tensor(missing)
            n = max(lengths[i] for i in missing)
            h, _ = trunk_forward(self.base, ids[sub, :n], mask[sub, :n], self.split)
            for row, i in enumerate(missing):
                self.states[index[i]] = h[row, : lengths[i]].to("cpu", copy=True)
        self.hits += len(index) - len(missing)
        self.misses += len(missing)
        n = max(lengths)
        h = torch.zeros((len(index), n, self.base.config.hidden_size), dtype=torch.float32)
        for row, k in enumerate(index):
            h[row, : lengths[row]] = self.states[k]
        h = h.to(ids.device)
        return h, layer_mask(self.base, mask[:, :n], h)
