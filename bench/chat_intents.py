"""Intent accuracy and routing measured through ``POST /v1/chat`` on the real graph (issue 10).

    .venv/bin/python bench/chat_intents.py [--data ../shared/data] [--out docs/eval/chat-intents.json]

The test sets are the language-quality issue's (``ecrec.learning.intent_data.intent_splits``): Bitext's
held-out paraphrase groups, its random rows, the separately written Chinese test set, and the
``none`` texts (held-out project texts and MARC reviews). Every message opens a new session, so
the figure is the first turn's. Besides the intent label, it reports where the chat routed each
message: a service request should reach a service path (a task, a slot question, a clarifying
question or a hand-off), a ``none`` text the product or small-talk path. ~6 min on 2 cores.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, stats_ms  # noqa: E402

PORT = 8767
SERVICE_ROUTES = {"service", "slot", "clarify", "escalate"}


async def ask_all(texts: list[str], concurrency: int = 8) -> list[tuple[dict, float]]:
    import httpx

    out: list = [None] * len(texts)
    queue = list(enumerate(texts))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=120) as c:
        async def worker():
            while queue:
                i, t = queue.pop()
                t0 = time.perf_counter()
                for _ in range(20):
                    r = await c.post("/v1/chat", json={"user_id": f"bench-{i % 500}", "message": t})
                    if r.status_code != 503:
                        break
                    await asyncio.sleep(1)
                out[i] = (r.json() if r.status_code == 200 else {"error": r.status_code, "detail": r.text[:200]},
                          time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "eval" / "chat-intents.json")
    ap.add_argument("--none-marc", type=int, default=200, help="MARC reviews per language in the none test")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ecrec.learning.intent_data import intent_splits

    splits = intent_splits(args.data)
    labels = splits["labels"]
    tests = dict(splits["tests"])
    for name in [n for n in tests if n.startswith("none_marc")]:  # a sample per language is enough here
        texts, y, lang = tests[name]
        keep = [i for g in sorted(set(lang)) for i in [j for j, x in enumerate(lang) if x == g][: args.none_marc]]
        tests[name] = ([texts[i] for i in keep], y[keep], [lang[i] for i in keep])

    import ray
    from ray import serve

    from deployments.app import build_app
    from deployments.config import AppArgs

    tmp = Path(tempfile.mkdtemp(prefix="ecrec-chat-bench-"))
    app_args = AppArgs(state_dir=str(tmp / "state"), namespace="ecrec-chat-bench", sqlite_synchronous="NORMAL",
                       record_impressions=False, rate_limit_per_s=0)
    from deployments.ray_private import local_init_kwargs

    ray.init(**local_init_kwargs(2, 512 * 1024**2))
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app(app_args), name="ecrec", route_prefix="/")
    report = {"machine": machine(), "command": "python bench/chat_intents.py", "sets": {}}
    try:
        for name, (texts, y, _) in tests.items():
            t0 = time.time()
            answers = asyncio.run(ask_all(list(texts)))
            gold = [labels[int(v)] for v in y]
            ok = [a for a, _ in answers if "error" not in a]
            errors = Counter(a["error"] for a, _ in answers if "error" in a)
            pred = [a["intent"]["label"] if "error" not in a else None for a, _ in answers]
            routes = Counter(a["route"] for a in ok)
            service = [g != "none" for g in gold]
            to_service = [("error" not in a) and a["route"] in SERVICE_ROUTES for a, _ in answers]
            entry = {"n": len(texts), "errors": dict(errors),
                     "intent_accuracy": round(float(np.mean([p == g for p, g in zip(pred, gold)])), 4),
                     "routes": dict(routes),
                     "latency_ms_c8": {k: round(v, 1) for k, v in stats_ms([t for _, t in answers]).items()},
                     "seconds": round(time.time() - t0, 1)}
            if any(service):
                entry["service_reached_a_service_path"] = round(float(np.mean(
                    [s for s, is_service in zip(to_service, service) if is_service])), 4)
                entry["clarify_share"] = round(routes.get("clarify", 0) / max(1, len(ok)), 4)
            if not all(service):
                entry["none_kept_off_service_templates"] = round(float(np.mean(
                    [not s for s, is_service in zip(to_service, service) if not is_service])), 4)
            report["sets"][name] = entry
            print(name, json.dumps(entry, ensure_ascii=False), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
