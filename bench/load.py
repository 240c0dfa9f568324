"""Bounded load generator for a local ecrec server: closed-loop capacity, open-loop rate runs, a soak.

Only 127.0.0.1 is ever targeted. Open loop: requests start on a fixed schedule whatever the answers,
but at most ``max_outstanding`` are in flight (launches beyond that are counted as ``shed``, not
queued), so the client cannot run away. Latency is measured from each request's scheduled start.

    python bench/load.py --url http://127.0.0.1:8000 --seconds 60 --out docs/soak.json [--short]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

CATALOG = Path(__file__).resolve().parents[1] / "ecrec" / "data" / "demo_catalog.jsonl"
DEFAULT_MIX: dict[str, float] = {"recommend": 0.7, "click": 0.2, "search": 0.1}
USERS = [f"load-u{n}" for n in range(200)]
SEARCHES = ["降噪耳机", "拍照手机", "running shoes", "儿童积木玩具", "bluetooth speaker", "登山鞋 防水",
            "mechanical keyboard", "咖啡机", "camera lens for portraits", "平板电脑 学习"]
TIMEOUT_S = 10.0
Request = tuple[str, str, dict | None]


def item_ids() -> list[str]:
    """Ids of the demo catalog (what click events refer to)."""
    return [json.loads(line)["id"] for line in CATALOG.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_local(base_url: str) -> str:
    """Refuse anything but http://127.0.0.1[:port]."""
    if urlsplit(base_url).scheme != "http" or urlsplit(base_url).hostname != "127.0.0.1":
        raise ValueError(f"bench/load.py only targets http://127.0.0.1[:port], not {base_url!r}")
    return base_url.rstrip("/")


class Mix:
    """Draws requests by weight: recommendations, click events, search events (fresh event_id each)."""

    def __init__(self, weights: dict[str, float] | None = None, seed: int = 0):
        self.weights = dict(weights or DEFAULT_MIX)
        if unknown := set(self.weights) - set(DEFAULT_MIX):
            raise ValueError(f"unknown request kinds {sorted(unknown)}; known: {sorted(DEFAULT_MIX)}")
        self.rng, self.items = random.Random(seed), item_ids()

    def next(self) -> Request:
        kind = self.rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
        user = self.rng.choice(USERS)
        if kind == "recommend":
            return "GET", f"/v1/users/{user}/recommendations?k=10", None
        event = {"event_id": uuid.uuid4().hex, "user_id": user}  # unique across runs: never deduplicated
        if kind == "click":
            return "POST", "/v1/events", {**event, "type": "click", "item_id": self.rng.choice(self.items)}
        return "POST", "/v1/events", {**event, "type": "search", "text": self.rng.choice(SEARCHES)}


@dataclass
class Stats:
    status: Counter = field(default_factory=Counter)
    latency_ms: list[float] = field(default_factory=list)  # 2xx only
    retry_after: int = 0
    conn_errors: int = 0
    timeouts: int = 0
    shed: int = 0

    def summary(self, seconds: float, sent: int) -> dict:
        lat, ok = sorted(self.latency_ms), sum(n for s, n in self.status.items() if 200 <= s < 300)
        pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None)  # noqa: E731
        return {"sent": sent, "by_status": {str(s): n for s, n in sorted(self.status.items())}, "ok": ok,
                "5xx": sum(n for s, n in self.status.items() if s >= 500), "429": self.status[429],
                "503": self.status[503], "503_with_retry_after": self.retry_after, "p50_ms": pct(0.5),
                "p90_ms": pct(0.9), "p99_ms": pct(0.99), "achieved_rps": round(ok / seconds, 1) if seconds > 0 else 0.0,
                "conn_errors": self.conn_errors, "timeouts": self.timeouts, "shed": self.shed,
                "seconds": round(seconds, 2)}


def _client(base_url: str, api_key: str | None, max_connections: int) -> httpx.AsyncClient:
    key = api_key if api_key is not None else os.environ.get("ECREC_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=check_local(base_url), headers=headers, timeout=TIMEOUT_S, trust_env=False,
                             limits=httpx.Limits(max_connections=max_connections,
                                                 max_keepalive_connections=max_connections))


async def _one(client: httpx.AsyncClient, req: Request, stats: Stats, start: float) -> None:
    method, path, body = req
    try:
        r = await client.request(method, path, json=body)
    except httpx.TimeoutException:
        stats.timeouts += 1
        return
    except httpx.TransportError:  # refused, reset, protocol errors
        stats.conn_errors += 1
        return
    stats.status[r.status_code] += 1
    if 200 <= r.status_code < 300:
        stats.latency_ms.append((time.perf_counter() - start) * 1000)
    elif r.status_code == 503 and "retry-after" in r.headers:
        stats.retry_after += 1


async def _closed(base_url: str, workers: int, seconds: float, mix: Mix, api_key: str | None) -> dict:
    stats = Stats()
    async with _client(base_url, api_key, workers) as client:
        t0 = time.perf_counter()
        end = t0 + seconds

        async def worker() -> None:  # closed loop: the next request when the last is answered
            while time.perf_counter() < end:
                await _one(client, mix.next(), stats, time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(workers)))
        out = stats.summary(time.perf_counter() - t0, sum(stats.status.values()) + stats.conn_errors + stats.timeouts)
    return {"workers": workers, "rps": out["achieved_rps"], "errors": out["sent"] - out["ok"], "p50_ms": out["p50_ms"]}


def measure_capacity(base_url: str, mix: dict[str, float] | None = None, seconds: float = 15.0,
                     levels: tuple[int, ...] = (1, 2, 4, 8, 16), api_key: str | None = None, seed: int = 0) -> dict:
    """Closed loop at each worker count (``seconds`` split evenly); ``rps``: the best level with 0 errors
    (every answer 2xx, no client errors), else the best 2xx rate of any level (``error_free`` False)."""
    m = Mix(mix, seed)
    runs = [asyncio.run(_closed(base_url, w, seconds / len(levels), m, api_key)) for w in levels]
    clean = [r for r in runs if r["errors"] == 0]
    best = max(clean or runs, key=lambda r: r["rps"])
    return {"rps": best["rps"], "workers": best["workers"], "error_free": bool(clean), "levels": runs}


async def _open(base_url: str, rate: float, seconds: float, mix: Mix, api_key: str | None,
                max_outstanding: int) -> dict:
    stats, tasks = Stats(), set()
    n = max(1, int(rate * seconds))
    async with _client(base_url, api_key, max_outstanding) as client:
        t0 = time.perf_counter()
        for i in range(n):
            due = t0 + i / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_outstanding:
                stats.shed += 1
                continue
            task = asyncio.create_task(_one(client, mix.next(), stats, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=2 * TIMEOUT_S)
            for task in pending:  # still unanswered: counted as timeouts
                task.cancel()
            stats.timeouts += len(pending)
        return stats.summary(time.perf_counter() - t0, n - stats.shed)


def run_rate(base_url: str, rate: float, seconds: float, mix: dict[str, float] | None = None,
             api_key: str | None = None, max_outstanding: int = 256, seed: int = 0) -> dict:
    """Open loop at ``rate`` req/s for ``seconds``: counts by status, 503s (with Retry-After), 2xx
    latency percentiles, achieved 2xx/s, client-side errors (connection / timeout / shed)."""
    if rate <= 0 or seconds <= 0:
        raise ValueError("rate and seconds must be positive")
    out = asyncio.run(_open(base_url, rate, seconds, Mix(mix, seed), api_key, max_outstanding))
    return {"target_rps": round(rate, 1), **out}


def table(result: dict) -> str:
    """Markdown table of a soak result."""
    cap = result["capacity"]
    rows = ["| phase | target rps | sent | achieved rps | 2xx | 503 (Retry-After) | other 5xx | 429 | conn err "
            "| timeouts | shed | p50 ms | p90 ms | p99 ms |", "|" + "---|" * 14]
    for p in result["phases"]:
        rows.append(f"| {p['phase']} | {p['target_rps']} | {p['sent']} | {p['achieved_rps']} | {p['ok']} | "
                    f"{p['503']} ({p['503_with_retry_after']}) | {p['5xx'] - p['503']} | {p['429']} | "
                    f"{p['conn_errors']} | {p['timeouts']} | {p['shed']} | {p['p50_ms']} | {p['p90_ms']} | "
                    f"{p['p99_ms']} |")
    head = (f"Capacity (closed loop): {cap['rps']} req/s with {cap['workers']} workers"
            f"{'' if cap['error_free'] else ' (no error-free level)'}; mix {result['mix']}.")
    return head + "\n\n" + "\n".join(rows) + "\n"


def soak(base_url: str, seconds: float = 60.0, out: str | Path = "docs/soak.json", short: bool = False,
         mix: dict[str, float] | None = None, api_key: str | None = None) -> dict:
    """Capacity, then 80 % of it for ``seconds``, 200 % (overload), 50 % (recovery); writes JSON + .md."""
    check_local(base_url)
    cap_s, hi_s, lo_s = (10.0, 8.0, 6.0) if short else (15.0, 20.0, 15.0)
    seconds = 10.0 if short else seconds
    # warm up first (replicas just started or replaced answer slowly at first), then measure at
    # least 2 s per level: 1 s levels overstated capacity and made "80 %" an overload
    asyncio.run(_closed(base_url, 4, 3.0, Mix(mix, 99), api_key))
    # short (CI, two shared cores): fewer, longer levels and a lower "normal" share. With 2 s levels
    # one lucky level read 41 req/s where the open loop held 28, and "80 %" shed 12 requests.
    levels = (2, 4, 8) if short else (1, 2, 4, 8, 16)
    cap = measure_capacity(base_url, mix, cap_s, levels=levels, api_key=api_key)
    if cap["rps"] <= 0:
        raise RuntimeError(f"no successful request while measuring capacity: {cap}")
    normal, calm = (0.6, 0.4) if short else (0.8, 0.5)
    plan = [(f"{normal:.0%}", normal, seconds), ("200%", 2.0, hi_s), (f"{calm:.0%} recovery", calm, lo_s)]
    phases = [{"phase": name, **run_rate(base_url, share * cap["rps"], secs, mix, api_key, seed=i + 1)}
              for i, (name, share, secs) in enumerate(plan)]
    result = {"url": base_url, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "short": short,
              "mix": dict(mix or DEFAULT_MIX), "capacity": cap, "phases": phases}
    path, md = Path(out), table(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (127.0.0.1 only)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the 80%% phase")
    ap.add_argument("--out", default="docs/soak.json", help="JSON result; the markdown table goes next to it (.md)")
    ap.add_argument("--short", action="store_true", help="CI: capacity 10 s (2/4/8 workers), 60%% 10 s, 200%% 8 s, 40%% 6 s")
    args = ap.parse_args(argv)
    try:
        check_local(args.url)
    except ValueError as e:
        ap.error(str(e))
    soak(args.url, args.seconds, args.out, args.short)


if __name__ == "__main__":
    main()
