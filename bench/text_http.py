"""The text path over HTTP against the same work in process, side by side in one run.

    .venv/bin/python bench/text_http.py        # ~6 min; writes the "text-http" section of BENCHMARKS.md

The same 32 MARC test reviews as ``bench/text_path.py`` (16 zh, 16 en, seeded) are analysed:

- in process: ``TextAnalyzer.analyze`` on the whole batch, 2 torch threads, in a process of its own,
  once before the app starts and once after it stopped (the median of both);
- over HTTP, the app as shipped (default ``AppArgs``, one local Ray of 2 CPUs): ``POST /v1/sentiment``
  with the 32 texts in one request, then the 32 texts one request at a time (concurrency 1), then all
  32 requests at once (concurrency 32).

Each side runs ``--rounds`` times after a warm-up; the median is reported, with its ratio to in process.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
PORT = 8767


def in_process(data_dir: str, rounds: int) -> dict:
    """Runs in a child process: seconds per batch of ``TextAnalyzer.analyze`` with 2 threads."""
    out = Path(tempfile.mkdtemp(prefix="ecrec-text-http-")) / "inproc.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "text_path.py"), "--worker", "none", "--data", data_dir,
                    "--rounds", str(rounds), "--agree", "0", "--out", str(out)], check=True, cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false"))
    res = json.loads(out.read_text())
    shutil.rmtree(out.parent)
    return {**res, "seconds": float(np.median(res["times"]))}


MODES = ("batch", "one at a time", "32 at once")


async def over_http(texts: list[str], rounds: int, modes: tuple[str, ...] = MODES) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=300) as client:
        async def batch():
            r = await client.post("/v1/sentiment", json={"texts": texts})
            r.raise_for_status()
            return r.json()["results"]

        async def one(t):
            r = await client.post("/v1/sentiment", json={"texts": [t]})
            r.raise_for_status()
            return r.json()["results"][0]

        async def singles():
            return [await one(t) for t in texts]

        async def together():
            return await asyncio.gather(*(one(t) for t in texts))

        out = {}
        runs = {"batch": batch, "one at a time": singles, "32 at once": together}
        for name, run in ((m, runs[m]) for m in modes):
            await run()  # warm-up
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                await run()
                times.append(time.perf_counter() - t0)
            out[name] = {"seconds": float(np.median(times))}
        return out


def serve_side(overrides: dict, texts: list[str], rounds: int, modes: tuple[str, ...]) -> dict:
    """One local Ray + the app with ``overrides`` on the default ``AppArgs``, shut down after."""
    import ray
    from ray import serve

    from deployments.app import build_app
    from deployments.config import AppArgs

    tmp = Path(tempfile.mkdtemp(prefix="ecrec-bench-"))
    app_args = AppArgs(state_dir=str(tmp / "state"), namespace="ecrec-text-http", **overrides)
    from deployments.ray_private import local_init_kwargs

    ray.init(**local_init_kwargs(2, 512 * 1024**2))
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": PORT})
        serve.run(build_app(app_args), name="ecrec", route_prefix="/")
        return asyncio.run(over_http(texts, rounds, modes))
    finally:
        serve.shutdown()
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an AppArgs field to change from its default on the shipped side")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from common import machine, write_section
    from text_path import reviews

    texts = reviews(args.data, 16)
    inproc = in_process(args.data, args.rounds)
    shipped = dict(kv.split("=", 1) for kv in args.set)
    sides = [("as shipped" + (f" ({', '.join(args.set)})" if args.set else ""),
              serve_side(shipped, texts, args.rounds, MODES))]
    after = in_process(args.data, args.rounds)  # before and after the app: the machine's drift hits both sides
    inproc["times"] += after["times"]
    inproc["seconds"] = float(np.median(inproc["times"]))
    print(json.dumps({"in_process": inproc, "http": {n: {k: v["seconds"] for k, v in r.items()} for n, r in sides}},
                     indent=1))

    base = inproc["seconds"]
    rows = ["| side | seconds for the 32 reviews | reviews/s | / in process |", "|---|---|---|---|",
            f"| in process, `TextAnalyzer.analyze` of the batch | {base:.2f} | {32 / base:.1f} | 1.00 |"]
    for side, http in sides:
        for name, r in http.items():
            rows.append(f"| HTTP `POST /v1/sentiment`, {name}; app {side} | {r['seconds']:.2f} | "
                        f"{32 / r['seconds']:.1f} | {r['seconds'] / base:.2f} |")
    batch = sides[0][1]["batch"]["seconds"]
    body = [
        "## Text path over HTTP vs in process", "",
        f"Machine: {machine()}. Command: `.venv/bin/python bench/text_http.py` (the 32 MARC reviews of the "
        f"CPU text path section, {inproc['rows']} encoder rows; each app on a fresh local Ray of 2 CPUs with the "
        f"default `AppArgs` but for what the side names; client in the same process; median of {args.rounds} "
        "rounds after a warm-up, in process twice: before the app and after).", "",
        *rows, "",
        f"Target (issue 13): HTTP <= 1.2x in process. The batch request as shipped: {batch / base:.2f}x "
        f"({'met' if batch <= 1.2 * base else 'NOT met'}).",
    ]
    write_section("text-http", "\n".join(body))


if __name__ == "__main__":
    main()
