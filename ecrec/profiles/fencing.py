"""Fencing epochs: one writer per profile shard, even while a replaced copy is still alive.

A shard cut off from the cluster (its node unreachable, not dead) keeps running after the
cluster has started a copy to replace it; with a shared store both would write one user's
events, interleaved. So each serving incarnation takes a new epoch from the store when it starts
(``EventStore.take_epoch``: strictly increasing per shard), every write it makes carries
``Fence(shard, epoch)``, and the store compares that with the newest epoch taken *in the same
atomic step as the write* (SQLite: inside the write's ``BEGIN IMMEDIATE``; Redis: inside the
write's Lua script, or its WATCHed transaction). A write from an older epoch is refused whole
with ``FencedError``, and the shard that got it stops serving (Kleppmann's fencing tokens).

Two kinds of writer carry no serving epoch, on purpose:

- ``fence=None``: an offline tool writing with the service stopped (``reshard`` filling new
  files, tests preparing a store). It is not checked: it has no incarnation to be replaced.
- a ``ProfileShard(serving=False)`` (an export reading beside the live shard) carries epoch 0,
  which every serving incarnation outranks: it never fences the live shard, and a write it tried
  beside one is refused.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

READER_EPOCH = 0  # what a shard opened only to read carries: below every epoch ``take_epoch`` hands out


@dataclass(frozen=True, slots=True)
class Fence:
    """What a write carries: whose it is, and from which incarnation."""

    shard: int
    epoch: int


class FencedError(RuntimeError):
    """A newer incarnation of this shard took over: this one's write was refused (nothing of it
    was applied) and this one has stopped serving; the request belongs to the new one."""

    def __init__(self, shard: int, epoch: int, newest: int):
        super().__init__(shard, epoch, newest)  # as ``args``: it pickles, so it crosses Ray's actor boundary
        self.shard, self.epoch, self.newest = shard, epoch, newest

    def __str__(self) -> str:
        return (f"profile shard {self.shard} was fenced: a newer incarnation of this shard took over "
                f"(epoch {self.newest}; this one holds epoch {self.epoch}) and this one has stopped serving. "
                "Its refused write was not applied; retry, and the request reaches the new incarnation")


def stops_when_fenced(method):
    """For a shard's public methods: once fenced, every call fails at once with the same error
    and without touching the store; a refusal from the store inside the call fences the shard.
    (The shard has ``fenced`` (the first refusal, or None) and ``_fence(error)``.)"""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if self.fenced is not None:
            raise FencedError(self.fenced.shard, self.fenced.epoch, self.fenced.newest)
        try:
            return method(self, *args, **kwargs)
        except FencedError as e:
            self._fence(e)
            raise

    return call
