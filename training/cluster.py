"""Where a training driver's Ray comes from: the cluster a Ray Job runs in, or a local Ray here."""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def init_kwargs(num_cpus: int, object_store_bytes: int, env=None) -> dict:
    """``ray.init`` arguments. Inside a Ray Job (``RAY_ADDRESS`` set) the driver joins that cluster,
    and Ray refuses resource arguments there; elsewhere it starts a local Ray on 127.0.0.1."""
    env = os.environ if env is None else env
    if env.get("RAY_ADDRESS"):
        return {}
    from deployments.ray_private import local_init_kwargs

    return local_init_kwargs(num_cpus, object_store_bytes)


def connect(num_cpus: int, object_store_bytes: int, workers: int, cpus_per_worker: float, use_gpu: bool) -> None:
    """Join the Ray a driver already has or a Ray Job runs in, or start a local one; then check that
    ``workers`` Ray Train workers can fit (``check_resources``)."""
    import ray

    started = False
    if not ray.is_initialized():
        kwargs = init_kwargs(num_cpus, object_store_bytes)
        ray.init(**kwargs)
        started = bool(kwargs)  # a local Ray: nothing will add resources to it
    check_resources(workers, cpus_per_worker, use_gpu, local=started)


def shortfall(workers: int, cpus_per_worker: float, gpus_per_worker: float, resources: dict) -> str | None:
    """What ``workers`` Ray Train workers need that ``resources`` (Ray's CPU/GPU counts) lack, in
    words; None when they fit. (Ray Train starts no worker until all of them fit.)"""
    need = {"CPU": workers * cpus_per_worker, "GPU": workers * gpus_per_worker}
    short = [f"{need[k]:g} {k} ({workers} workers x {per:g}), {resources.get(k, 0):g} there"
             for k, per in (("CPU", cpus_per_worker), ("GPU", gpus_per_worker))
             if need[k] > resources.get(k, 0) + 1e-9]
    return "; ".join(short) or None


def check_resources(workers: int, cpus_per_worker: float, use_gpu: bool, local: bool) -> None:
    """Refuse at once what a Ray that ``connect`` started here (``local``) can never give: Ray
    Train used to wait forever, e.g. for the GPUs of ``gpu-cluster.yaml`` on a CPU machine. On a
    cluster, where an autoscaler may add nodes and other jobs free theirs, say what it waits for."""
    import ray

    gpus = 1.0 if use_gpu else 0.0
    total = shortfall(workers, cpus_per_worker, gpus, ray.cluster_resources())
    if total and local:
        raise SystemExit(f"this machine's Ray cannot run the training: it needs {total}. Lower `workers` or "
                         "`cpus_per_worker`, set `use_gpu: false`, or submit it to a cluster (RAY_ADDRESS)")
    free = shortfall(workers, cpus_per_worker, gpus, ray.available_resources())
    if total or free:
        log.warning("Ray Train waits until the cluster has what it needs free (or an autoscaler adds it): "
                    "%s", total or free)
