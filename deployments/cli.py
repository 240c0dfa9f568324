"""``ecrec index build`` and ``ecrec serve``: the Ray side of the command line."""
from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def _index_build(args) -> None:
    from deployments.index_build import build

    if args.ray_data:
        import ray

        ray.init(num_cpus=args.num_cpus, include_dashboard=False, object_store_memory=512 * 1024**2)
    out = build(args.catalog, args.out, args.model, args.factory,
                ray_data_above=0 if args.ray_data else 10**12, actors=args.actors)
    print(f"index artifact written to {out}")


def start_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """A local Ray bound to 127.0.0.1 with no dashboard, or join ``address`` (a cluster)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address)
        return
    from deployments.ray_private import local_init_kwargs

    ray.init(**local_init_kwargs(num_cpus or os.cpu_count(), 512 * 1024**2,
                                 metrics_port=int(os.environ.get("ECREC_METRICS_PORT", 8080))))


def _serve(args) -> None:
    import ray
    from ray import serve

    from deployments.app import build_app
    from deployments.config import AppArgs

    from ecrec.operations.security import KeyConfigError, bind_check, keys_from_env

    app_args = AppArgs.model_validate(dict(kv.split("=", 1) for kv in args.overrides))
    try:  # before Ray starts: a bad key list or an open bind is refused with a clear message
        print(bind_check(args.host, keys_from_env()), flush=True)
    except KeyConfigError as e:
        raise SystemExit(f"ecrec serve: {e}") from None
    start_ray(args.num_cpus, args.address)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(app_args), name="ecrec", route_prefix="/")
    print(f"ecrec is serving on http://{args.host}:{args.port}  (docs: /docs; Ctrl-C stops)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which replaces SIGTERM's handler
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("stopping ...", flush=True)
    serve.shutdown()
    ray.shutdown()


def register(sub) -> None:
    p = sub.add_parser("index", help="index artifacts")
    isub = p.add_subparsers(dest="index_cmd", required=True)
    b = isub.add_parser("build", help="embed a catalog and write an index artifact")
    b.add_argument("--catalog", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--model", default="e5-small")
    b.add_argument("--factory", default="auto", help="FAISS index factory (Flat, HNSW32, IVF1024,Flat) or auto: by size")
    b.add_argument("--ray-data", action="store_true", help="embed with a Ray Data actor pool")
    b.add_argument("--actors", type=int, default=2)
    b.add_argument("--num-cpus", type=int, default=None)
    b.set_defaults(fn=_index_build)

    p = sub.add_parser("serve", help="run the Serve graph on http://127.0.0.1:8000")
    p.add_argument("overrides", nargs="*", help="AppArgs as key=value, e.g. num_shards=4")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--address", default=None, help="join an existing Ray cluster instead")
    p.set_defaults(fn=_serve)
