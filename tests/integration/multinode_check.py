"""Kill a node under its profile shards, mid-stream; run by ``test_multinode.py`` in a process of
its own (it starts its own Ray cluster). Prints one JSON line with what it saw.

A Ray cluster of three nodes on this machine (``ray.cluster_utils.Cluster``): the head (the
driver), node A and node B. Shards need a ``profiles`` resource, which only A has when they are
placed; B, with the same resource, joins after them (a standby), so A is where they start and B
is where Ray can restart them. They keep their users in Redis. Events stream in; node A is removed half-way; the stream goes on,
retrying what failed, as the ingress's clients do on a 503. Then every acknowledged event must be
in its profile, and recommendations must come from the restored profiles.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(redis_url: str, state_dir: str) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from deployments.profiles import ProfileShardActor
    from ecrec.profiles.events import Event
    from ecrec.profiles.shard import shard_of

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    node_a = cluster.add_node(num_cpus=1, resources={"profiles": 4})
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    cluster.wait_for_nodes()
    a_id = node_a.node_id
    dim, n_shards, users = 16, 2, [f"user-{i}" for i in range(6)]
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((40, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    shards = []
    for i in range(n_shards):  # one at a time: each placed (and checked) before the next
        sh = ProfileShardActor.options(name=f"mn-shard-{i}", resources={"profiles": 1}).remote(
            i, state_dir, dim, 5, "FULL", None, 300.0, redis_url, "multinode", 64.0)
        ray.get(sh.ping.remote(), timeout=60)
        shards.append(sh)
    before = [ray.get(s.stats.remote(), timeout=60) for s in shards]
    node_b = cluster.add_node(num_cpus=1, resources={"profiles": 4})
    cluster.wait_for_nodes()
    acked: dict[str, int] = {u: 0 for u in users}
    retried = 0
    killed_at = None
    for n in range(120):
        if n == 60:
            cluster.remove_node(node_a)  # the node under the shards goes away mid-stream
            killed_at = time.time()
        u = users[n % len(users)]
        e = Event(user_id=u, type="click", item_id=f"i{n % 40}", ts=time.time(), event_id=f"ev-{n}")
        for attempt in range(60):
            try:
                _, applied, _, _ = ray.get(shards[shard_of(u, n_shards)].apply.remote(e, vecs[n % 40], None), timeout=30)
                acked[u] += int(applied)
                break
            except Exception:  # the actor restarting on the other node: send the same event again
                retried += 1
                time.sleep(0.5)
        else:
            raise RuntimeError(f"event {n} was never acknowledged")
        if n == 60:
            back_after = time.time() - killed_at
    versions = {u: ray.get(shards[shard_of(u, n_shards)].get.remote(u)).version for u in users}
    stats = [ray.get(s.stats.remote()) for s in shards]
    node_ids = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
    # recommendations from the restored profiles: the ranker over a small catalog
    from ecrec.retrieval.catalog import Item
    from ecrec.retrieval.index import VectorIndex
    from ecrec.retrieval.ranking import ItemStats, Ranker, RankingConfig
    from ecrec.recommender import item_meta

    items = {f"i{j}": Item(id=f"i{j}", title=f"item {j}", category=["c"]) for j in range(40)}
    index = VectorIndex(dim)
    index.upsert(list(items), vecs, [item_meta(it) for it in items.values()])
    ranker = Ranker(index, items, ItemStats(), RankingConfig(explore_share=0.0, exclude_seen=False))
    recs = ranker.recommend(ray.get(shards[0].get.remote(users[0])), 5, time.time())
    out = {"acked": acked, "versions": versions, "retried": retried, "node_a": a_id,
           "node_b": node_b.node_id, "before": before, "after": stats, "node_a_alive": node_ids.get(a_id),
           "first_answer_after_kill_s": round(back_after, 2), "recs": [r.item_id for r in recs]}
    ray.shutdown()
    cluster.shutdown()
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1], sys.argv[2]), default=str))
