"""The catalog board: one durable log of item changes, interaction counters and co-visits.

The ingress writes item upserts/deletes here (acknowledged once in SQLite); every retriever
replica, and every ingress replica's own catalog view, pulls ``sync(...)`` (the views:
``sync_view``) every ``sync_interval_s`` (0.2 s by default) and applies what it has
not seen, so a change reaches all replicas within a second, and a new replica catches up by
loading the index artifact and replaying the log from 0. The decisions (what is kept, how the
log is compacted, what a restart means for replicas) live in ``ecrec.retrieval.catalog_log``.
"""
from __future__ import annotations

import numpy as np
import ray

from deployments.config import AppArgs


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3, max_concurrency=8)
class CatalogBoard:
    def __init__(self, path: str, content_path: str | None = None):
        from ecrec.retrieval.catalog_log import CatalogLog

        self.log = CatalogLog(path)
        # Guides and articles: a log of their own (same durability), replayed on the content artifact.
        self.content = CatalogLog(content_path or str(path).replace("catalog.db", "content.db"))
        # (this board's id, reloads): POST /v1/admin/reload bumps it after the retrievers reloaded,
        # and every ingress replica rebuilds its catalog view when it sees a newer one. A restarted
        # board has another id, so a replica never mistakes its count for one it has seen.
        import threading
        import uuid

        self.generation = (uuid.uuid4().hex, 0)
        self._generation_lock = threading.Lock()

    def get_generation(self) -> tuple[str, int]:
        return self.generation

    def bump_generation(self) -> tuple[str, int]:
        with self._generation_lock:
            self.generation = (self.generation[0], self.generation[1] + 1)
            return self.generation

    def sync_view(self, sync_args: tuple, content_args: tuple):
        """(reload generation, ``sync(*sync_args)``, ``sync_content(*content_args)``): everything an
        ingress replica's catalog view polls for, in one call."""
        return self.generation, self.sync(*sync_args), self.sync_content(*content_args)

    def put(self, item_json: str, vector: np.ndarray) -> int:
        return self.log.put(item_json, vector)

    def delete(self, item_id: str) -> int:
        return self.log.delete(item_id)

    def note(self, interactions: list[tuple[str, float, bool, tuple | None]], shown: list[str]) -> None:
        self.log.note(interactions, shown)

    def sync(self, seq: int, stats_version: int, covisit_pos: int = 0, epoch: str | None = None,
             artifact_id: str | None = None):
        return self.log.sync(seq, stats_version, covisit_pos, epoch, artifact_id)

    def put_content(self, doc_json: str, vector: np.ndarray) -> int:
        return self.content.put(doc_json, vector)

    def delete_content(self, content_id: str) -> int:
        return self.content.delete(content_id)

    def sync_content(self, seq: int, epoch: str | None = None, artifact_id: str | None = None):
        """(epoch, document changes after ``seq``): as ``sync`` for items."""
        epoch, rows, _, _ = self.content.sync(seq, self.content.stats_version, 0, epoch, artifact_id)
        return epoch, rows

    def last_seq(self) -> int:
        return self.log.last_seq()

    def info(self) -> dict:
        return self.log.info()


def get_board(args: AppArgs):
    state = args.resolved_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    board = CatalogBoard.options(name="ecrec-catalog-board", namespace=args.namespace, lifetime="detached",
                                 get_if_exists=True).remote(str(state / "catalog.db"), str(state / "content.db"))
    if not hasattr(board, "sync_view"):  # a detached board started by an older ecrec, still running
        raise RuntimeError(
            f"the catalog board running in namespace {args.namespace!r} comes from an older ecrec (no "
            "sync_view). Its state is on disk: stop it and deploy again (`ray stop`, or "
            f"ray.kill(ray.get_actor('ecrec-catalog-board', namespace={args.namespace!r})))")
    return board
