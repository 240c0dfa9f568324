"""Profile shard actors: each owns the users that ``shard_of`` maps to it, durably.

They are detached named actors (created on first use by whichever replica gets there first),
so they outlive the replica that created them; ``max_restarts`` brings a killed shard back,
restoring its users from its store before it answers again.
"""
from __future__ import annotations

import logging

import ray

from deployments.config import AppArgs

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3, max_concurrency=1)
class ProfileShardActor:
    def __init__(self, index: int, state_dir: str, dim: int, snapshot_every: int, synchronous: str,
                 colocate: AppArgs | None = None):
        from ecrec.shard import ProfileShard
        from ecrec.store import SQLiteStore

        self.index = index
        store = SQLiteStore(f"{state_dir}/profiles-{index:04d}.db", synchronous=synchronous)
        self.shard = ProfileShard(store, dim, snapshot_every=snapshot_every)
        self.view = None
        if colocate is not None:  # a retriever inside the shard: GET recommendations is one hop
            from deployments.retriever import CatalogView

            self.view = CatalogView(colocate)
            self.view.sync_in_thread()

    def recommend_for(self, user_id: str, k: int, filters, text_vec, text):
        if self.view is None:
            raise RuntimeError("this shard was started without colocate_retrieval")
        return self.view.rank(self.shard.get(user_id), k, filters, text_vec, text)

    def apply(self, event, item_vec, analysis):
        """(profile version, applied, the item if it is a co-visit with the user's prior recent
        items, those items): the ingress forwards the pair to the catalog board."""
        before = self.shard.get(event.user_id)
        recent = list(before.recent) if before is not None else []
        version, applied = self.shard.apply(event, item_vec, analysis)
        after = self.shard.get(event.user_id)
        from ecrec.recommender import covisit_pair

        pair = applied and event.item_id is not None and covisit_pair(event.item_id, after.recent)
        return version, applied, (event.item_id, recent) if pair else None

    def get(self, user_id: str):
        return self.shard.get(user_id)

    def record_impressions_many(self, batch: list[tuple[str, list[str], float]]) -> None:
        for user_id, item_ids, now in batch:
            self.shard.record_impressions(user_id, item_ids, now)

    def delete(self, user_id: str) -> bool:
        return self.shard.delete(user_id)

    def ping(self) -> int:
        return self.index


def shard_name(i: int) -> str:
    return f"ecrec-profiles-{i:04d}"


def get_shards(args: AppArgs, dim: int) -> list:
    """Handles to every shard actor, creating any that does not exist yet."""
    state = args.resolved_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    return [
        ProfileShardActor.options(name=shard_name(i), namespace=args.namespace, lifetime="detached",
                                  get_if_exists=True).remote(i, str(state), dim, args.snapshot_every,
                                                             args.sqlite_synchronous,
                                                             args if args.colocate_retrieval else None)
        for i in range(args.num_shards)
    ]
