"""Where a training driver's Ray comes from: the cluster a Ray Job runs in, or a local Ray here."""
from __future__ import annotations

import os


def init_kwargs(num_cpus: int, object_store_bytes: int, env=None) -> dict:
    """``ray.init`` arguments. Inside a Ray Job (``RAY_ADDRESS`` set) the driver joins that cluster,
    and Ray refuses resource arguments there; elsewhere it starts a local Ray on 127.0.0.1."""
    env = os.environ if env is None else env
    if env.get("RAY_ADDRESS"):
        return {}
    return {"num_cpus": num_cpus, "include_dashboard": False, "object_store_memory": object_store_bytes,
            "_node_ip_address": "127.0.0.1"}


def connect(num_cpus: int, object_store_bytes: int) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(**init_kwargs(num_cpus, object_store_bytes))
