"""Per-request ranking work against catalog size: this tree vs a baseline commit, side by side.

    .venv/bin/python bench/ranking_scale.py                      # baseline 822beb5, writes "ranking-scale"
    .venv/bin/python bench/ranking_scale.py --sizes 4385,100000 --baseline HEAD~1
    .venv/bin/python bench/ranking_scale.py --sizes 1000000 --baseline-upto 100000 --section ranking-scale-1m

Each side runs in its own process with ``PYTHONPATH`` set to its tree (the baseline is checked
out with ``git worktree`` into /tmp), on the same synthetic catalog: unit vectors in 384
dimensions around 500 cluster centres, 40 top categories, ratings, prices and ages drawn from a
fixed seed. Indexes follow ``index_factory="auto"`` (Flat up to 200,000 items, HNSW32 above; the
HNSW structure is built once, saved, and loaded by both sides). A warm shopper (40 clicks, carts
and purchases) asks for k=10, and before every request one other shopper's interaction moves the
popularity counters, as on a live shop. Measured: ``Ranker.recommend`` unfiltered and filtered by
one category, 200 requests each (40 above 200,000 items), p50 and p99.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 384


def catalog(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((500, DIM)).astype(np.float32)
    src = rng.integers(0, 500, n)
    x = centres[src] + 0.8 * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, src % 40, rng.uniform(1, 5, n).round(1), rng.uniform(5, 500, n).round(2), rng.uniform(0, 90, n)


def worker(n: int, index_dir: str, out: str) -> None:
    """Runs inside one tree's interpreter."""
    from ecrec.retrieval.catalog import Item
    from ecrec.profiles.events import Event
    from ecrec.retrieval.index import Filters, ItemMeta, VectorIndex, choose_factory
    from ecrec.profiles.profile import UserProfile
    from ecrec.retrieval.ranking import ItemStats, Ranker, RankingConfig

    now = 1_790_000_000.0
    x, cat, rating, price, age = catalog(n)
    ids = [f"p{j}" for j in range(n)]
    items = {i: Item(id=i, title=f"item {j}", category=[f"c{cat[j]}"], price=float(price[j]),
                     rating=float(rating[j]), created_at=now - 86400 * float(age[j]))
             for j, i in enumerate(ids)}
    factory = choose_factory("auto", n)
    saved = Path(index_dir)
    if factory != "Flat" and (saved / "index.json").exists():
        index = VectorIndex.load(saved)
    else:
        index = VectorIndex(DIM, factory)
        index.upsert(ids, x, [ItemMeta(f"c{cat[j]}", float(price[j]), 1) for j in range(n)])
        if factory != "Flat":
            index.save(saved)
    stats = ItemStats()
    ranker = Ranker(index, items, stats, RankingConfig(explore_share=0.1))
    rng = np.random.default_rng(1)
    profile = UserProfile("shopper", DIM)
    for t, j in enumerate(rng.integers(0, n, 40)):
        kind = ("click", "cart", "purchase")[t % 3]
        profile = profile.apply(Event(user_id="shopper", type=kind, item_id=ids[j], ts=now - 3600 + t), x[j])
    res = {}
    for name, filters in (("unfiltered", None), ("one category", Filters(categories=frozenset({"c7"})))):
        lat, warm = [], 20 if n <= 200_000 else 5
        for r in range(warm + (200 if n <= 200_000 else 40)):
            stats.interaction(ids[int(rng.integers(0, n))], 1.0)  # another shopper's event moves the counters
            t0 = time.perf_counter()
            recs = ranker.recommend(profile, 10, now + r, filters)
            lat.append(time.perf_counter() - t0)
            assert len(recs) == 10
        a = np.asarray(lat[warm:]) * 1000
        res[name] = {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}
    Path(out).write_text(json.dumps(res))


def run_side(tree: Path, n: int, index_dir: Path) -> dict:
    out = Path(f"/tmp/ranking-scale-{os.getpid()}.json")
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, __file__, "--worker", str(n), "--index-dir", str(index_dir), "--out", str(out)],
                   check=True, env=env, cwd=tree)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="4385,100000,1000000")
    ap.add_argument("--baseline", default="822beb5")
    ap.add_argument("--worker", type=int, default=None)
    ap.add_argument("--index-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--baseline-upto", type=int, default=None,
                    help="run the baseline side only up to this many items (its per-request sort of every "
                         "item takes ~0.7 s at 100,000 and grows with the catalog)")
    ap.add_argument("--section", default="ranking-scale", help="the BENCHMARKS.md section to write")
    args = ap.parse_args()
    if args.worker is not None:
        return worker(args.worker, args.index_dir, args.out)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine, write_section

    base = Path(f"/tmp/ecrec-baseline-{args.baseline}")
    if not base.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], check=True, cwd=ROOT)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        index_dir = Path(f"/tmp/ranking-scale-index-{n}")
        new = run_side(ROOT, n, index_dir)  # builds (and saves) the HNSW structure first
        old = run_side(base, n, index_dir) if args.baseline_upto is None or n <= args.baseline_upto else None
        for name in new:
            rows.append((n, name, old[name] if old else None, new[name]))
            print(n, name, old[name] if old else None, new[name], flush=True)
    body = [
        "## Ranking work per request vs catalog size" + (f" ({args.sizes} items)" if args.section != "ranking-scale"
                                                         else ""),
        "",
        f"Machine: {machine()}. Command: `.venv/bin/python bench/ranking_scale.py "
        f"{' '.join(a for a in sys.argv[1:])}` (baseline `{args.baseline}`"
        f"{f' up to {args.baseline_upto:,} items' if args.baseline_upto is not None else ''}, "
        "each side in its own process on the same synthetic catalog and index; one interaction between "
        "requests moves the popularity counters, as on a live shop; k=10, exploration on).",
        "",
        "| items | request | baseline p50 ms | baseline p99 ms | this tree p50 ms | this tree p99 ms | p50 speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, name, o, w in rows:
        if o is None:
            body.append(f"| {n:,} | {name} | not run | not run | {w['p50']:.1f} | {w['p99']:.1f} | |")
            continue
        body.append(f"| {n:,} | {name} | {o['p50']:.1f} | {o['p99']:.1f} | {w['p50']:.1f} | {w['p99']:.1f} | "
                    f"{o['p50'] / w['p50']:.1f}x |")
    write_section(args.section, "\n".join(body))


if __name__ == "__main__":
    main()
