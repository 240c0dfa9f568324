"""Serve latency and throughput, side by side in one run, against the framework's own floor.

    .venv/bin/python bench/serve_latency.py      # ~5 min; writes the "serve" section of BENCHMARKS.md

One local Ray runs a no-op FastAPI deployment (the floor: HTTP proxy + one FastAPI replica) and,
one after the other, three ecrec graphs: as shipped (on the demo catalog the ingress reads the
profile from its store and ranks it itself: no actor hop after the proxy's), with
``profile_reads=shard`` (the profile from its shard actor: one hop, as the graph was before) and
with ``colocate_retrieval=false`` (a retriever actor ranks: one hop). A keep-alive asyncio client
drives the floor and each graph's GET at concurrency 1, 16 and 64, interleaved; the in-process
``Recommender`` gives the engine's own cost.
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, stats_ms, write_section  # noqa: E402

PORT = 8766
SHIPPED = "GET /v1/users/{id}/recommendations k=10 (as shipped: profile from the store, ranked in the ingress)"
SHARD = "GET recommendations, profile_reads=shard (profile from the shard actor: one hop, as before)"
RETRIEVER = "GET recommendations, colocate_retrieval=false (ranked by a retriever actor: one hop)"
VARIANTS = {SHIPPED: {}, SHARD: {"profile_reads": "shard"}, RETRIEVER: {"colocate_retrieval": False}}
REVIEWS = ["这款手机拍照效果很好，但电池续航不太理想", "Noise cancelling is superb, battery is average.",
           "面料舒服，尺码偏小", "Great grip, a bit heavy", "咖啡豆很香，回购", "The tent leaked in the rain."]


def noop_app():
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(name="Noop", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
    @serve.ingress(api)
    class Noop:
        @api.get("/")
        async def get(self) -> dict:
            return {"ok": True}

    return Noop.bind()


async def drive(make_request, n: int, concurrency: int) -> tuple[dict, float, int, int]:
    """(latency stats of the answered (200) requests, answered requests per second, errors, 503s:
    shed by the ingress's load limit, ``AppArgs.max_in_flight``, while nothing restarts)."""
    import httpx

    lat, errors, shed = [], 0, 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        counter = iter(range(n))

        async def worker():
            nonlocal errors, shed
            for i in counter:
                method, url, body = make_request(i)
                t0 = time.perf_counter()
                r = await client.request(method, url, json=body)
                if r.status_code == 200:
                    lat.append(time.perf_counter() - t0)
                shed += r.status_code == 503
                errors += r.status_code not in (200, 503)

        for i in range(min(20, n)):  # warm-up
            await client.request(*make_request(i)[:2], json=make_request(i)[2])
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return stats_ms(lat or [float("nan")]), (n - errors - shed) / wall, errors, shed


def main() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from deployments.app import build_app
    from deployments.config import AppArgs

    tmp = Path(tempfile.mkdtemp(prefix="ecrec-bench-"))
    args = AppArgs(state_dir=str(tmp / "state"), namespace="ecrec-bench", sqlite_synchronous="FULL")
    from deployments.ray_private import local_init_kwargs

    ray.init(**local_init_kwargs(2, 512 * 1024**2))
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(noop_app(), name="noop", route_prefix="/noop")
    users = [f"bench-{i}" for i in range(32)]

    async def seed():
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=60) as c:
            for i, u in enumerate(users):
                await c.post("/v1/events", json={"user_id": u, "type": "review", "text": REVIEWS[i % 6]})
                await c.post("/v1/events", json={"user_id": u, "type": "click", "item_id": f"phones-00{i % 9 + 1}"})

    floor_route = lambda i: ("GET", "/noop/", None)  # noqa: E731
    get_route = lambda i: ("GET", f"/v1/users/{users[i % 32]}/recommendations?k=10", None)  # noqa: E731
    event_route = lambda i: ("POST", "/v1/events", {"user_id": users[i % 32], "type": "review",  # noqa: E731
                                                    "text": REVIEWS[i % 6] + f" #{i}"})
    # One graph at a time beside the no-op app, each measured against the floor of its own phase
    # (idle graphs' background work would otherwise weigh on every row).
    results = {}
    for name, update in VARIANTS.items():
        serve.run(build_app(args.model_copy(update={**update, "namespace": f"ecrec-bench-{len(results)}",
                                                    "state_dir": str(tmp / f"state-{len(results)}")})),
                  name="ecrec", route_prefix="/")
        asyncio.run(seed())
        r = results[name] = {}
        for c, n in ((1, 200), (16, 400), (64, 640)):  # floor and GET interleaved, twice at c=1
            for rnd in range(2 if c == 1 else 1):
                r[("floor", c, rnd)] = asyncio.run(drive(floor_route, n, c))
                r[("get", c, rnd)] = asyncio.run(drive(get_route, n, c))
        if name == SHIPPED:
            for c, n in ((1, 75), (16, 200)):
                r[("event", c, 0)] = asyncio.run(drive(event_route, n, c))
        print(name, {k: (round(v[0]["p50"], 1), round(v[1]), v[3]) for k, v in r.items()}, flush=True)
        serve.delete("ecrec")
    serve.shutdown()
    ray.shutdown()

    from ecrec.retrieval.catalog import load_demo_catalog
    from ecrec.profiles.events import Event
    from ecrec.recommender import Recommender, RecommenderConfig

    rec = Recommender.from_catalog(load_demo_catalog(), RecommenderConfig())
    for i, u in enumerate(users):
        rec.ingest(Event(user_id=u, type="review", text=REVIEWS[i % 6]))
    samples = []
    for i in range(300):
        t0 = time.perf_counter()
        rec.recommend(users[i % 32], k=10)
        samples.append(time.perf_counter() - t0)
    inproc = stats_ms(samples)
    t_ev = []
    for i in range(60):
        t0 = time.perf_counter()
        rec.ingest(Event(user_id=users[i % 32], type="review", text=REVIEWS[i % 6] + f" #{i}"))
        t_ev.append(time.perf_counter() - t0)
    inproc_ev = stats_ms(t_ev)

    lines = ["| route | floor p50 ms (c=1) | c=1 p50 ms | c=1 p99 ms | c=1 req/s | c=16 p50 ms | c=16 req/s "
             "(floor) | c=64 p50 ms | c=64 req/s (floor), 503s | p50 / floor | target 1.5 x floor + 2 ms | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = []
    for name, r in results.items():
        rounds = [(r[("floor", 1, k)][0]["p50"], r[("get", 1, k)]) for k in range(2)]
        floor = float(np.median([f for f, _ in rounds]))
        p50 = float(np.median([g[0]["p50"] for _, g in rounds]))
        p99 = float(np.median([g[0]["p99"] for _, g in rounds]))
        rps = float(np.median([g[1] for _, g in rounds]))
        (s16, r16, _, _), (_, f16, _, _) = r[("get", 16, 0)], r[("floor", 16, 0)]
        (s64, r64, _, shed64), (_, f64, _, _) = r[("get", 64, 0)], r[("floor", 64, 0)]
        target = 1.5 * floor + 2
        errors = sum(v[2] for k, v in r.items() if k[0] != "floor")
        lines.append(f"| {name} | {floor:.1f} | {p50:.1f} | {p99:.1f} | {rps:.0f} | {s16['p50']:.1f} | "
                     f"{r16:.0f} ({f16:.0f}) | {s64['p50']:.1f} | {r64:.0f} ({f64:.0f}), {shed64 / 640:.0%} shed | {p50 / floor:.2f} | {target:.1f} ms: {'met' if p50 <= target else 'NOT met'} "
                     f"| {errors} |")
        summary.append(f"{name.split(' (')[0] if name != SHIPPED else 'as shipped'} {p50 / floor:.2f}x")
    (e1, re1, _, _), (e16, re16, _, _) = results[SHIPPED][("event", 1, 0)], results[SHIPPED][("event", 16, 0)]
    lines.append(f"| POST /v1/events with text (as shipped) | | {e1['p50']:.1f} | {e1['p99']:.1f} | {re1:.0f} | "
                 f"{e16['p50']:.1f} | {re16:.0f} | | | | | |")
    lines.append(f"| in-process `Recommender.recommend` | | {inproc['p50']:.1f} | {inproc['p99']:.1f} | "
                 f"{1000 / inproc['mean']:.0f} | | | | | | | |")
    lines.append(f"| in-process `Recommender.ingest` (review text) | | {inproc_ev['p50']:.1f} | {inproc_ev['p99']:.1f} | "
                 f"{1000 / inproc_ev['mean']:.0f} | | | | | | | |")
    body = "\n".join([
        "## Serve graph over HTTP", "", f"Machine: {machine()}; load generator in the same process (it competes "
        "for the 2 cores). Durable writes: SQLite WAL, synchronous=FULL. One graph at a time beside a no-op "
        "FastAPI deployment; each row's ratio is to the floor measured in its own phase (median of two "
        "interleaved rounds of 200 requests at c=1; 400 at c=16, 640 at c=64). latencies and req/s count answered requests (200); "
        "at c=64 an ingress replica works on `max_in_flight` = 32 at once and sheds the rest with 503 + Retry-After "
        "(by design, so that nothing queues long); errors are any other status.", "",
        "Command: `.venv/bin/python bench/serve_latency.py`", "", *lines, "",
        "Target (issue 13): GET recommendations p50 <= 1.5 x floor + 2 ms at concurrency 1, as shipped. "
        "p50 / floor: " + "; ".join(summary) + ".",
    ])
    write_section("serve", body)


if __name__ == "__main__":
    main()
