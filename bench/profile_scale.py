"""Profiles at 1M users: bytes per profile, the pool's memory with a 10 % hot set, cold loads,
update throughput per shard and a killed shard's time to serve again, on SQLite and on Redis.

Users are written as snapshots of profiles built by real update rules (``UserProfile.apply``) from
a mix of shoppers: 70 % light (8 events), 25 % regular (60 events, 6 lists shown), 5 % heavy
(300 events with reviews, 40 lists shown). Each user's snapshot is a template's bytes with its
own user id. Durability while measuring updates: SQLite WAL synchronous=FULL, Redis
``appendfsync always`` (both: an acknowledged event is on disk).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, stats_ms, write_section  # noqa: E402
from ecrec.profiles import profile_codec  # noqa: E402
from ecrec.profiles.events import Event  # noqa: E402
from ecrec.profiles.profile import ProfileConfig, UserProfile  # noqa: E402
from ecrec.text.sentiment import Clause, Sentiment, TextAnalysis  # noqa: E402
from ecrec.profiles.shard import ProfileShard, shard_of  # noqa: E402

DIM = 384
MIX = (("light", 0.70, 8, 0), ("regular", 0.25, 60, 6), ("heavy", 0.05, 300, 40))


def template(kind_events: int, lists: int, seed: int) -> UserProfile:
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((6, DIM)).astype(np.float32)
    pos = Sentiment("positive", {"positive": 0.85, "neutral": 0.1, "negative": 0.05})
    neg = Sentiment("negative", {"positive": 0.05, "neutral": 0.1, "negative": 0.85})

    def vec(t):
        v = topics[t] + 0.6 * rng.standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    p, now = UserProfile("template", DIM), 1.75e9
    kinds = ["view", "click", "view", "click", "cart", "view", "click", "purchase", "view", "dislike"]
    for t in range(kind_events):
        ts = now + 60 * t
        if t % 12 == 11:
            cl = [Clause("质量很好，很喜欢", pos, vec(t % 4)), Clause("但是物流太慢了", neg, vec(5))]
            a = TextAnalysis("质量很好，很喜欢，但是物流太慢了", "zh", False, pos, vec(t % 4), cl)
            p = p.apply(Event(user_id="template", type="review", text=a.text, ts=ts), analysis=a)
        else:
            item = f"B{rng.integers(0, 10**9):09d}"  # Amazon-like ids: 10 characters
            p = p.apply(Event(user_id="template", type=kinds[t % 10], item_id=item, ts=ts), vec(t % 4))
        if lists and t % max(1, kind_events // lists) == 0:
            p = p.record_impressions([f"B{j:09d}" for j in rng.integers(0, 10**9, 10)], ts)
    return p


def with_user(blob: bytes, user_id: str) -> bytes:
    """A template's ECP3 bytes with another user id (header, id, rest; new checksum)."""
    body = blob[8:]
    head = profile_codec._HEAD.size
    (n,) = struct.unpack_from("<H", body, head)
    uid = user_id.encode()
    new = body[:head] + struct.pack("<H", len(uid)) + uid + body[head + 2 + n:]
    return blob[:4] + struct.pack("<I", zlib.crc32(new)) + new


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Stores:
    """Opens the shards' stores of one backend."""

    def __init__(self, kind: str, root: Path, shards: int, url: str | None = None):
        self.kind, self.root, self.shards, self.proc, self.url = kind, root, shards, None, url
        if kind == "redis" and url is None:
            import redis

            port = 16379 + os.getpid() % 1000
            self.proc = subprocess.Popen(
                [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root),
                 "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            self.url = f"redis://127.0.0.1:{port}/0"
            c = redis.Redis(port=port)
            for _ in range(200):
                try:
                    c.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            self.client = c

    def open(self, i: int, synchronous: str = "FULL"):
        if self.kind == "sqlite":
            from ecrec.profiles.store import SQLiteStore

            return SQLiteStore(self.root / f"profiles-{i:04d}.db", synchronous=synchronous)
        from ecrec.profiles.store_redis import RedisStore

        return RedisStore(self.url, prefix=f"bench{i}")

    def bulk(self, store, rows: list[tuple[str, bytes]]) -> None:
        if self.kind == "sqlite":
            store._tx(lambda db: db.executemany("INSERT OR REPLACE INTO profile_snapshots VALUES (?, 1, ?)", rows))
            return
        with store.r.pipeline(transaction=False) as pipe:
            for u, blob in rows:
                pipe.hset(store._k("snap", u), 1, blob)
                pipe.sadd(store._k("users"), u)
            pipe.execute()

    def size_bytes(self) -> int:
        if self.kind == "sqlite":
            return sum(p.stat().st_size for p in self.root.glob("profiles-*"))
        return int(self.client.info("memory")["used_memory"])

    def close(self) -> None:
        if self.proc is not None:
            self.client.shutdown(nosave=True)
            self.proc.wait(30)


def population(users: int, shards: int):
    rng = np.random.default_rng(0)
    kinds = rng.choice(len(MIX), size=users, p=[w for _, w, *_ in MIX])
    ids = [f"shopper-{n:07d}" for n in range(users)]
    return rng, kinds, ids, np.array([shard_of(u, shards) for u in ids])


def load(st: "Stores", users: int, shards: int, templates: dict) -> dict:
    """Write every user's snapshot (run in a process of its own, so the measuring one starts clean)."""
    rng, kinds, ids, owner = population(users, shards)
    names = [k for k, *_ in MIX]
    picks = np.random.default_rng(1).integers(0, len(templates[names[0]]), size=users)
    t0 = time.perf_counter()
    blob_bytes = 0
    for i in range(shards):
        store = st.open(i, "NORMAL")  # bulk load: fsync at checkpoints only
        rows = []
        for n in np.flatnonzero(owner == i):
            blob = with_user(templates[names[kinds[n]]][picks[n]], ids[n])
            blob_bytes += len(blob)
            rows.append((ids[n], blob))
            if len(rows) == 20_000:
                st.bulk(store, rows)
                rows = []
        st.bulk(store, rows)
        store.close()
    return {"load_s": time.perf_counter() - t0, "blob_mean": blob_bytes / users}


def run(kind: str, users: int, shards: int, hot: float, updates: int, templates: dict) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"ecrec-bench-{kind}-", dir="/tmp"))
    st = Stores(kind, root, shards)
    try:
        out = subprocess.run([sys.executable, __file__, "--load", kind, "--root", str(root), "--url", st.url or "",
                              "--users", str(users), "--shards", str(shards)],
                             capture_output=True, text=True, check=True).stdout
        loaded = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
        load_s, blob_mean = loaded["load_s"], loaded["blob_mean"]
        stored = st.size_bytes()
        rng, kinds, ids, owner = population(users, shards)
        # one shard at a time: its hot set loaded cold, then updated; the pool is all shards' caches
        hot_users = [n for n in range(users) if rng.random() < hot]
        cold, pool, per_shard_eps, restart = [], [], [], []
        gc.collect()
        rss0 = rss_bytes()
        live = []
        for i in range(shards):
            shard = ProfileShard(st.open(i), DIM, ProfileConfig(max_future_skew_s=1e12), snapshot_every=50)
            mine = [ids[n] for n in hot_users if owner[n] == i]
            for u in mine:
                t = time.perf_counter()
                shard.get(u)
                cold.append(time.perf_counter() - t)
            pool.append(shard.cached_bytes)
            vec = rng.standard_normal(DIM).astype(np.float32)
            vec /= np.linalg.norm(vec)
            t = time.perf_counter()
            for j in range(updates):
                u = mine[j % len(mine)]
                shard.apply(Event(user_id=u, type="click", item_id=f"B{j:09d}", ts=1.76e9 + j), vec, None)
            per_shard_eps.append(updates / (time.perf_counter() - t))
            live.append(shard)
        gc.collect()
        rss = rss_bytes() - rss0
        for i in range(shards):  # a shard killed and started again (here: a new store client and shard)
            u = next(ids[n] for n in hot_users if owner[n] == i)
            t = time.perf_counter()
            again = ProfileShard(st.open(i), DIM, ProfileConfig(max_future_skew_s=1e12))
            assert again.get(u) is not None
            restart.append(time.perf_counter() - t)
        sizes = {k: [len(b) for b in templates[k]] for k, *_ in MIX}
        return {"kind": kind, "users": users, "load_s": load_s, "stored": stored, "blob_mean": blob_mean,
                "hot": len(hot_users), "pool_bytes": sum(pool), "rss": rss, "cold": stats_ms(cold),
                "eps": per_shard_eps, "restart": stats_ms(restart), "restart_max": max(restart) * 1000,
                "sizes": sizes}
    finally:
        st.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--hot", type=float, default=0.10)
    ap.add_argument("--updates", type=int, default=3000, help="click events per shard, on its hot users")
    ap.add_argument("--stores", default="sqlite,redis")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # one store, in a process of its own (clean memory)
    ap.add_argument("--load", help=argparse.SUPPRESS)  # write the users of one store
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    templates = {k: [template(n, lists, seed).to_bytes() for seed in range(12)] for k, _, n, lists in MIX}
    if args.load:
        st = Stores(args.load, Path(args.root), args.shards, args.url or None)
        print("RESULT " + json.dumps(load(st, args.users, args.shards, templates)))
        return
    if args.one:
        print("RESULT " + json.dumps(run(args.one, args.users, args.shards, args.hot, args.updates, templates)))
        return
    heavy = UserProfile.from_bytes(templates["heavy"][0])
    results = []
    for kind in args.stores.split(","):
        if kind == "redis" and shutil.which("redis-server") is None:
            print("redis-server is not installed: skipping the Redis rows")
            continue
        print(f"[{kind}] {args.users:,} users over {args.shards} shards ...", flush=True)
        out = subprocess.run([sys.executable, __file__, "--one", kind, "--users", str(args.users), "--shards",
                              str(args.shards), "--hot", str(args.hot), "--updates", str(args.updates)],
                             capture_output=True, text=True, check=True).stdout
        results.append(json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:]))
        print({k: v for k, v in results[-1].items() if k != "sizes"}, flush=True)
    mean = {k: np.mean(v) for k, v in results[0]["sizes"].items()}
    from ecrec.chat.session import TREND, ChatSession

    chat = ChatSession.new("shopper-0000001", 1.76e9)
    chat.turns, chat.language, chat.slots = 40, "zh", {"order_id": "A1234567890", "item_id": "B000123456"}
    chat.sentiment, chat.intents = ["negative", "neutral"] * (TREND // 2), ["track_order", "get_refund"] * (TREND // 2)
    chat.last_reply = "您的订单 A1234567890 已发货，预计明天送达。如需退款，请告诉我原因，我会为您转人工客服。"
    chat_bytes = len(chat.to_bytes())
    lines = [
        "## Profiles at 1M users", "", f"Machine: {machine()}.", "",
        f"Command: `.venv/bin/python bench/profile_scale.py --users {args.users} --shards {args.shards}`", "",
        "Bytes per profile (stored form ECP3: int8 vectors, one item table, hashed impressions; "
        f"budget `ProfileConfig.max_bytes` = {ProfileConfig().max_bytes}): light (8 events) "
        f"{mean['light']:.0f}, regular (60 events, 6 lists) {mean['regular']:.0f}, heavy (300 events with "
        f"reviews, 40 lists) {mean['heavy']:.0f}; a heavy profile in a shard's cache: "
        f"{heavy.memory_bytes()} bytes (its stored bytes plus the cache entry). Before (ECP2 and "
        "Python objects in the cache): 13-25 KB stored, ~48-92 KB in memory.", "",
        f"What else a shopper holds: the sequence history is the profile's `recent` list (up to "
        f"{ProfileConfig().max_sequence} items, inside the budget above); a chat session at its bound "
        f"({TREND} turns of sentiment and intent history, slots, the last reply) is {chat_bytes} bytes in the "
        "store and nothing in a shard's memory between turns; idempotency keys are rows of the store "
        "(kept 7 days), not in memory.", "",
        "| store | users | bulk write s | store size per user | hot set | pool memory (accounted) | pool RSS growth "
        "| cold load p50 / p99 ms | updates/s per shard (min-max) | killed shard serves again p50 / max ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['kind']} | {r['users']:,} | {r['load_s']:.0f} | {r['stored'] / r['users']:.0f} B | {r['hot']:,} "
            f"| {r['pool_bytes'] / 2**20:.0f} MiB ({r['pool_bytes'] / r['hot']:.0f} B/profile) "
            f"| {r['rss'] / 2**20:.0f} MiB ({r['rss'] / r['hot']:.0f} B/profile) "
            f"| {r['cold']['p50']:.2f} / {r['cold']['p99']:.2f} | {min(r['eps']):.0f}-{max(r['eps']):.0f} "
            f"| {r['restart']['p50']:.1f} / {r['restart_max']:.1f} |")
    lines += [
        "",
        "- Store size per user: SQLite files, or Redis `used_memory`, over all users (snapshots only: each "
        "user as after a compaction; the event log between snapshots adds up to `snapshot_every` events).",
        "- Updates: click events, each durable before it returns (SQLite WAL `synchronous=FULL`; Redis "
        "`appendfsync always`), one shard at a time in one process on 2 cores.",
        "- Pool memory: what the shards' caches account (`ProfileShard.cached_bytes`), and the growth of the "
        "process's resident memory while the hot set loaded (each store measured in a fresh process; it "
        "includes SQLite's page cache and the allocator's slack).",
        "- A killed shard serving again: a new store client and `ProfileShard` over the same store, until "
        "its first profile is served; nothing is replayed at start-up (Ray's actor restart adds its own time).",
    ]
    if not args.no_write:
        write_section("profile_scale", "\n".join(lines))
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
