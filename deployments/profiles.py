"""Profile shard actors: each owns the users that ``shard_of`` maps to it, durably.

They are detached named actors (created on first use by whichever replica gets there first),
so they outlive the replica that created them; ``max_restarts`` brings a killed shard back,
restoring its users from its store before it answers again. Each start takes a new fencing epoch
(``ecrec.profiles.fencing``): a copy left running on a partitioned node is refused at its next
write and answers ``FencedError`` from then on (the ingress answers 503 + Retry-After).

Shards own the writes. Reads (GET recommendations) go to the store itself where the ingress can
reach it (``ecrec.profiles.reader``), and to the shard only where the store cannot say.
"""
from __future__ import annotations

import logging

import ray

from deployments.config import AppArgs

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3, max_concurrency=1)
class ProfileShardActor:
    """Created once (detached) with its storage settings; a redeploy changes the rest through
    ``reconfigure``, never by recreating the actor. (``colocate`` is accepted and ignored: shards
    used to hold a retriever of their own; ranking now runs in the ingress.)"""

    def __init__(self, index: int, state_dir: str, dim: int, snapshot_every: int, synchronous: str,
                 colocate: AppArgs | None = None, max_future_skew_s: float = 300.0, store: str = "sqlite",
                 namespace: str = "ecrec", cache_mb: float | None = None):
        from ecrec.profiles.profile import ProfileConfig
        from ecrec.profiles.profile_layout import erasure_key
        from ecrec.profiles.shard import ProfileShard
        from ecrec.profiles.store_redis import open_store

        self.index, self.state_dir, self.dim, self.store_spec = index, state_dir, dim, store
        saved = self._saved()  # a restart after a redeploy's reconfigure: those settings, not the first ones
        if saved is not None:
            snapshot_every, synchronous = saved["snapshot_every"], saved["synchronous"]
            max_future_skew_s = saved["max_future_skew_s"]
        self.store = open_store(store, f"{state_dir}/profiles-{index:04d}.db", synchronous, prefix=namespace)
        self.blob_reads = 0  # profiles handed out for ranking (``get_blob``)
        self.synchronous = synchronous
        # The erasure key: the state directory's file on one machine; on Redis, the store's own
        # (every node must hash the same way, and a node's local files are not everywhere).
        secret = erasure_key(state_dir) if store == "sqlite" else None
        self.shard = ProfileShard(self.store, dim, ProfileConfig(max_future_skew_s=max_future_skew_s),
                                  snapshot_every=snapshot_every, secret=secret,
                                  max_bytes=int(cache_mb * 2**20) if cache_mb else None, shard_id=index)
        from ray.util import metrics

        tags = ("model_version",)  # "<encoder+heads>@<index artifact>" of the list, as the ingress tags it
        self.m_shown = metrics.Counter("ecrec_items_shown", "items in served lists",
                                       tag_keys=("source", "position", "arm") + tags)
        self.m_attributed = metrics.Counter("ecrec_attributed_events", "clicks, carts and purchases attributed "
                                            "to the list that showed the item",
                                            tag_keys=("type", "source", "position", "arm") + tags)
        self.m_lists = metrics.Counter("ecrec_lists_served", "lists shown (cold: to a user without a profile)",
                                       tag_keys=("arm", "cold") + tags)

    def _settings_file(self):
        from pathlib import Path

        return Path(self.state_dir) / f"profiles-{self.index:04d}.settings.json"

    def _saved(self) -> dict | None:
        import json

        f = self._settings_file()
        return json.loads(f.read_text()) if f.exists() else None

    def _save(self) -> None:
        import json

        f = self._settings_file()
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps({"snapshot_every": self.shard.snapshot_every, "synchronous": self.synchronous,
                                   "max_future_skew_s": self.shard.config.max_future_skew_s, "colocate": None}))
        tmp.rename(f)

    def settings(self) -> dict:
        """What a deploy compares with its args; ``node_id``: where this shard runs (a SQLite
        store is readable only from its own node); ``view`` is None (no retriever here)."""
        return {"state_dir": self.state_dir, "dim": self.dim, "store": self.store_spec,
                "snapshot_every": self.shard.snapshot_every,
                "synchronous": self.synchronous, "colocate": False, "view": None,
                "max_future_skew_s": self.shard.config.max_future_skew_s,
                "node_id": ray.get_runtime_context().get_node_id()}

    def reconfigure(self, snapshot_every: int, synchronous: str, colocate: AppArgs | None,
                    max_future_skew_s: float) -> dict:
        import dataclasses

        self.shard.snapshot_every = snapshot_every
        if hasattr(self.store, "set_synchronous"):  # SQLite; Redis's durability is its AOF setting
            self.store.set_synchronous(synchronous)
        self.synchronous = synchronous
        self.shard.config = dataclasses.replace(self.shard.config, max_future_skew_s=max_future_skew_s)
        self._save()  # Ray restarts a crashed actor with its creation arguments: these win
        return self.settings()

    def apply(self, event, item_vec, analysis, request_id: str | None = None):
        """(profile version, applied, the item and the user's prior recent items if it is a
        co-visit with them, where the event's list showed the item or None): the ingress forwards
        the pair to the catalog board."""
        version, applied, recent, recent_after = self.shard.apply_event(event, item_vec, analysis)
        from ecrec.operations.attribution import position_bucket, source_family
        from ecrec.recommender import covisit_pair

        pair = applied and event.item_id is not None and covisit_pair(event.item_id, recent_after)
        hit = None
        if applied:  # a retried event_id is counted once, like it is applied once
            hit = self.shard.attribute(request_id, event, analysis)
            if hit is not None:
                self.m_attributed.inc(tags={"type": event.type, "source": source_family(hit["source"]),
                                            "position": position_bucket(hit["position"]), "arm": hit["arm"],
                                            "model_version": hit["model_version"]})
        return version, applied, (event.item_id, recent) if pair else None, hit

    def served_many(self, lists: list[tuple]) -> int:
        from collections import Counter

        from ecrec.operations.attribution import position_bucket, source_family

        shown = Counter((source_family(source), position_bucket(pos), arm, version)
                        for _, _, items, _, arm, version, *_ in lists for pos, (_, source) in enumerate(items, start=1))
        for (source, bucket, arm, version), n in shown.items():
            self.m_shown.inc(n, tags={"source": source, "position": bucket, "arm": arm, "model_version": version})
        for (arm, cold, version), n in Counter((arm, str(bool(cold)).lower(), version)
                                               for _, _, _, _, arm, version, cold, _ in lists).items():
            self.m_lists.inc(n, tags={"arm": arm, "cold": cold, "model_version": version})
        return self.shard.served_many(lists)

    def metrics_window(self, window_s: float, now: float):
        """This shard's online counts over the last ``window_s`` seconds (``Attribution.window``)."""
        return self.shard.attribution.window(window_s, now)

    def get(self, user_id: str):
        return self.shard.get(user_id)

    def get_blob(self, user_id: str) -> bytes | None:
        """The profile in its stored form (~4 KB), for the retriever to decode: one decode per request.
        (Counted: the ingress reads from the store instead wherever it can.)"""
        self.blob_reads += 1
        return self.shard.get_blob(user_id)

    def chat_get(self, user_id: str, session_id: str, idle_s: float):
        return self.shard.chat_get(user_id, session_id, idle_s)

    def chat_commit(self, session, expected_turns: int, event, analysis):
        return self.shard.chat_commit(session, expected_turns, event, analysis)

    def delete(self, user_id: str) -> bool:
        return self.shard.delete(user_id)

    def ping(self) -> int:
        return self.index

    def stats(self) -> dict:
        import os

        return {"index": self.index, "host": os.uname().nodename, "node_id": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid(), "blob_reads": self.blob_reads, **self.shard.stats()}

    def pid(self) -> int:
        import os

        return os.getpid()


def shard_name(i: int) -> str:
    return f"ecrec-profiles-{i:04d}"


class StateMismatch(RuntimeError):
    """A running shard actor keeps its state somewhere other than this deploy's ``state_dir``."""


def check_layout(args: AppArgs, dim: int) -> None:
    """The state directory remembers how many shards and which model wrote it. Another shard
    count would strand users on the wrong shard (and erasure would miss them); another model
    would mix vector spaces: both are refused, with what to do instead."""
    from ecrec.profiles.profile_layout import Layout, check_or_write  # raises LayoutMismatch

    check_or_write(args.resolved_state_dir(), Layout(num_shards=args.num_shards, model=args.model, dim=dim))


def get_shards(args: AppArgs, dim: int) -> list:
    """Handles to every shard actor: created if missing, reconfigured if their live settings
    differ from ``args``; a different ``state_dir`` or shard count is refused (``StateMismatch``)."""
    check_layout(args, dim)
    state = args.resolved_state_dir()
    shards = [
        ProfileShardActor.options(name=shard_name(i), namespace=args.namespace, lifetime="detached",
                                  get_if_exists=True).remote(i, str(state), dim, args.snapshot_every,
                                                             args.sqlite_synchronous, None,
                                                             args.max_future_skew_s, args.store, args.namespace,
                                                             args.profile_cache_mb)
        for i in range(args.num_shards)
    ]
    for i, (sh, have) in enumerate(zip(shards, ray.get([sh.settings.remote() for sh in shards]))):
        if have["state_dir"] != str(state) or have["dim"] != dim or have.get("store", "sqlite") != args.store:
            raise StateMismatch(
                f"profile shard {i} (actor {shard_name(i)!r} in namespace {args.namespace!r}) keeps its state in "
                f"{have['state_dir']} (dim {have['dim']}, store {have.get('store', 'sqlite')}), but this deploy asks for "
                f"{state} (dim {dim}, store {args.store}). "
                "Use another namespace=, or stop the running actors first (`ray stop`, or "
                "`ecrec serve` after a restart).")
        # "view": a shard of an earlier ecrec may still hold a retriever of its own; this drops it
        want = {"snapshot_every": args.snapshot_every, "synchronous": args.sqlite_synchronous,
                "max_future_skew_s": args.max_future_skew_s, "view": None}
        if any(have.get(k) != v for k, v in want.items()):
            log.info("shard %d: reconfiguring %s -> %s", i, {k: have.get(k) for k in want}, want)
            ray.get(sh.reconfigure.remote(args.snapshot_every, args.sqlite_synchronous, None,
                                          args.max_future_skew_s))
    return shards

