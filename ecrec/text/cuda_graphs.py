"""Static-shape CUDA graphs of the encoder's per-batch forward pass (GPU only; Ray-free).

On a GPU, a small batch spends almost all its time launching kernels from the CPU: one
``TextAnalyzer.analyze`` of one review is ~290 launches, ~15 ms on an H200, while the GPU works
~0.7 ms (the same forward replayed from a CUDA graph: 0.6 ms). So ``TextEncoder`` on CUDA runs each
batch through a captured graph of *everything it computes per batch*: embeddings, every layer,
every branch (on every row) and the pooling, returned as one ``(b, dim + sum of classes)`` float32
tensor so that one copy brings it back to the host.

A graph replays fixed shapes, so each batch is padded to a bucket: rows up to the next power of two
(1, 2, 4, ... up to the encoder's ``batch_size``), tokens up to the next of 16, 32, 64, 128, ...
(up to ``max_length``). Padding tokens are masked out, so real rows' outputs do not change; filler
rows are sliced off. One graph per (branches, row bucket, length bucket), captured on first use
after a few warm-up passes on a side stream, kept in an LRU of at most ``MAX_GRAPHS``. The grid
is small: batch_size 32 and max_length 128 give 6 x 4 = 24 shapes per set of branches (the
analyzer's sentiment + intent, and none for ``encode``). All graphs share one memory pool, so
their intermediates take the memory of the largest one, not the sum; this is safe because
replays never overlap (a lock) and each output is copied off before the next replay.

A graph holds raw pointers to the weights: a captured model or branch must not be moved or
replaced in place (``clear()`` after doing so). A branch is kept alive by its graphs, so a
swapped-out head cannot have its address reused under a stale graph.

Padding, bucketing and ``forward_all`` are plain functions that run on CPU too (the tests check
them there); ``GraphRunner(capture=False)`` runs the same padded path eagerly.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Sequence

import torch

from ecrec.text.classifier import mean_pool, run_layer

log = logging.getLogger(__name__)

LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
MAX_GRAPHS = 64  # captured shapes kept (LRU); the grid per set of branches is ~24-36


def batch_buckets(batch_size: int) -> tuple[int, ...]:
    """Row buckets: powers of two below ``batch_size``, then ``batch_size`` itself."""
    out, b = [], 1
    while b < batch_size:
        out.append(b)
        b *= 2
    return (*out, batch_size)


def length_buckets(max_length: int) -> tuple[int, ...]:
    """Token buckets: those of ``LENGTH_BUCKETS`` below ``max_length``, then ``max_length`` itself."""
    return (*(b for b in LENGTH_BUCKETS if b < max_length), max_length)


def bucket(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``n`` (``buckets`` ascending)."""
    for b in buckets:
        if n <= b:
            return b
    raise ValueError(f"{n} is larger than the largest bucket {buckets[-1]}")


def pad_batch(ids: torch.Tensor, mask: torch.Tensor, batch_bucket: int, len_bucket: int,
              pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(b, t)`` ids and attention mask padded to ``(batch_bucket, len_bucket)``: new tokens are
    ``pad_id`` with mask 0. Filler rows attend to their first (pad) token only, so no row is fully
    masked (a softmax over nothing is NaN); they are sliced off after."""
    b, t = ids.shape
    if b > batch_bucket or t > len_bucket:
        raise ValueError(f"batch {tuple(ids.shape)} does not fit ({batch_bucket}, {len_bucket})")
    out_ids = ids.new_full((batch_bucket, len_bucket), pad_id)
    out_mask = mask.new_zeros((batch_bucket, len_bucket))
    out_ids[:b, :t] = ids
    out_mask[:b, :t] = mask
    out_mask[b:, 0] = 1
    return out_ids, out_mask


def static_mask(model, attention_mask: torch.Tensor, hidden: torch.Tensor):
    """``classifier.additive_mask``, always materialised: ``layer_mask`` returns ``None`` for a batch
    without padding, a check (``mask.all()``) that syncs with the GPU and cannot be captured."""
    from ecrec.text.classifier import additive_mask

    return additive_mask(attention_mask, hidden.dtype)


def output_width(dim: int, branches: Sequence) -> int:
    return dim + sum(int(b.head.out_features) for b in branches)


def forward_all(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                branches: Sequence) -> torch.Tensor:
    """What ``TextEncoder`` computes per batch, on every row: ``(b, dim + sum of classes)`` float32,
    the unit mean-pooled vector, then each branch's logits in order. A branch of K layers reads
    the hidden states after layer ``L - K``, like ``TextEncoder.encode_with_branches``."""
    n_layers = model.config.num_hidden_layers
    splits: dict[int, list[int]] = {}
    for j, br in enumerate(branches):
        splits.setdefault(n_layers - len(br.layers), []).append(j)
    h = model.embeddings(input_ids=input_ids)
    mask4 = static_mask(model, attention_mask, h)
    logits = [None] * len(branches)
    for at in range(n_layers + 1):
        for j in splits.get(at, []):
            logits[j] = branches[j](h, mask4, attention_mask).float()
        if at < n_layers:
            h = run_layer(model.encoder.layer[at], h, mask4)
    pooled = torch.nn.functional.normalize(mean_pool(h, attention_mask).float(), dim=-1)
    return torch.cat([pooled, *logits], dim=1)


class _Graph:
    def __init__(self, graph, inputs: torch.Tensor, out: torch.Tensor, branches: tuple):
        self.graph, self.inputs, self.out, self.branches = graph, inputs, out, branches


class GraphRunner:
    """Runs ``forward_all`` on a tokenized batch (host tensors), padded to buckets, from a CUDA graph
    per shape; returns the real rows as a host float32 tensor. ``capture=False``: the same padded
    path eagerly (for CPU tests and comparisons)."""

    def __init__(self, model, pad_id: int, batch_sizes: Sequence[int], lengths: Sequence[int],
                 max_graphs: int = MAX_GRAPHS, warmup: int = 3, capture: bool = True):
        self.model, self.pad_id = model, int(pad_id)
        self.batch_sizes, self.lengths = tuple(batch_sizes), tuple(lengths)
        self.max_graphs, self.warmup, self.capture = max_graphs, warmup, capture
        self.device = next(model.parameters()).device
        if capture and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA model, this one is on {self.device}")
        self.graphs: OrderedDict[tuple, _Graph | None] = OrderedDict()  # None: capture failed, run eager
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        # one capture stream for every graph: the caching allocator reuses a freed block only on the
        # stream it came from, so graphs captured on different streams would not share their pool
        self.stream = torch.cuda.Stream(self.device) if capture else None
        self.captures, self.capture_s = 0, 0.0
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self.graphs.clear()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, branches: Sequence) -> torch.Tensor:
        b, t = input_ids.shape
        shape = (bucket(b, self.batch_sizes), bucket(t, self.lengths))
        ids, mask = pad_batch(input_ids, attention_mask, *shape, self.pad_id)
        inputs = torch.stack([ids, mask.to(ids.dtype)])  # one host-to-device copy
        with torch.inference_mode():
            if not self.capture:
                return self._eager(inputs.to(self.device), branches)[:b].cpu()
            with self._lock, torch.cuda.device(self.device):
                g = self._graph((tuple(id(x) for x in branches), *shape), inputs, branches)
                if g is None:
                    return self._eager(inputs.to(self.device), branches)[:b].cpu()
                g.inputs.copy_(inputs)
                g.graph.replay()
                return g.out[:b].cpu()

    def _eager(self, inputs: torch.Tensor, branches: Sequence) -> torch.Tensor:
        return forward_all(self.model, inputs[0], inputs[1], branches)

    def _graph(self, key: tuple, inputs: torch.Tensor, branches: Sequence) -> _Graph | None:
        if key in self.graphs:
            self.graphs.move_to_end(key)
            return self.graphs[key]
        t0 = time.perf_counter()
        try:
            g = self._capture(inputs, tuple(branches))
        except Exception:  # an op that cannot be captured: this shape runs eagerly from now on
            log.warning("CUDA graph capture failed for shape %s; running it eagerly", key[1:], exc_info=True)
            g = None
        self.capture_s += time.perf_counter() - t0
        self.captures += 1
        self.graphs[key] = g
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        log.debug("captured batch %d x %d tokens in %.0f ms", key[1], key[2], 1e3 * (time.perf_counter() - t0))
        return g

    def _capture(self, inputs: torch.Tensor, branches: tuple) -> _Graph:
        static = inputs.to(self.device)  # allocated outside the graph's pool, refilled before each replay
        side, main = self.stream, torch.cuda.current_stream(self.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):  # warm-up: lazy inits (cuBLAS handles, workspaces) stay out of the graph
            for _ in range(self.warmup):
                self._eager(static, branches)
        graph = torch.cuda.CUDAGraph()  # captured on the warmed-up stream; entering syncs the device
        with torch.cuda.graph(graph, pool=self.pool, stream=side, capture_error_mode="thread_local"):
            out = self._eager(static, branches)
        main.wait_stream(side)
        return _Graph(graph, static, out, branches)
