"""The one place the project touches private names of another library (Ray's).

Each use has no public equivalent in the pinned Ray, and each is checked only on the versions in
``CHECKED_RAY_VERSIONS``: on any other, ``check_version`` refuses with what to do, and
``tests/test_ray_private.py`` fails the same way. What is used, and why:

- ``ray.init(_node_ip_address="127.0.0.1")``: a local Ray binds its services to loopback instead of
  the machine's address (safe by default); the public ``ray start --node-ip-address`` has no
  in-process twin.
- ``ray.init(_metrics_export_port=...)``: where the local Ray's Prometheus endpoint listens (public
  only as ``ray start --metrics-export-port``).
- ``ray.autoscaler._private.util.prepare_config`` / ``validate_config``: the preparation and
  validation ``ray up`` runs on a cluster config, offline (the cluster.yaml test).
"""
from __future__ import annotations

import importlib

CHECKED_RAY_VERSIONS = ("2.60.0",)


def check_version() -> str:
    import ray

    if ray.__version__ not in CHECKED_RAY_VERSIONS:
        raise RuntimeError(
            f"Ray {ray.__version__} is installed, but deployments/ray_private.py uses private Ray names "
            f"(ray.init's _node_ip_address and _metrics_export_port, ray.autoscaler._private.util) checked "
            f"only on Ray {', '.join(CHECKED_RAY_VERSIONS)}: check each in the new release, run "
            f"tests/test_ray_private.py and tests/test_cluster_config.py, then add the version to "
            f"CHECKED_RAY_VERSIONS")
    return ray.__version__


def local_init_kwargs(num_cpus: int, object_store_bytes: int, metrics_port: int | None = None) -> dict:
    """``ray.init`` arguments for a local Ray on 127.0.0.1 with no dashboard."""
    check_version()
    kwargs = {"num_cpus": num_cpus, "include_dashboard": False, "object_store_memory": object_store_bytes,
              "_node_ip_address": "127.0.0.1"}
    if metrics_port is not None:
        kwargs["_metrics_export_port"] = int(metrics_port)
    return kwargs


def prepare_and_validate_cluster(config: dict) -> dict:
    """A cluster config as ``ray up`` prepares it (defaults filled in), after Ray's own validation."""
    check_version()
    util = importlib.import_module("ray.autoscaler._private.util")
    prepared = util.prepare_config(config)
    util.validate_config(prepared)
    return prepared
