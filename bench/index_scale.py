"""Retrieval at catalog scale: Flat (exact) vs HNSW vs IVF-PQ (with exact re-ranking), side by side.

    .venv/bin/python bench/index_scale.py --n 1000000     # writes the "index-scale" section of BENCHMARKS.md

Items: the real passage vectors of the demo catalog and Amazon Scientific (e5-small, 4,690 items),
replicated with Gaussian noise and renormalised, so the catalog keeps their clusters (copies sit at
cosine ~0.9 from their source, like the same product in other sizes and colours). Queries: 200
fresh perturbations of random source items, the way an interest vector sits near what a shopper
liked. Reported per index: build time, memory, recall@100 against the exact top 100, and QPS for
single queries and batches of 64 (one thread per query path: FAISS's OpenMP off, as the served
retrievers run it). ``ecrec.retrieval.index.choose_factory`` ("auto") picks from this table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def base_vectors(data: Path) -> np.ndarray:
    from ecrec.retrieval.catalog import load_demo_catalog
    from ecrec.text.encoder import default_home, encode_cached
    from ecrec.evaluation.data import load_unisrec
    from ecrec.evaluation.harness import item_vectors
    from ecrec.recommender import RecommenderConfig, load_analyzer

    enc = load_analyzer(RecommenderConfig()).encoder
    cache = default_home() / "cache"
    demo = encode_cached(enc, [it.embedding_text() for it in load_demo_catalog()], "passage", cache)
    sci = item_vectors(load_unisrec(data / "recsys" / "amazon_scientific"), enc, cache)
    return np.vstack([demo, sci]).astype(np.float32)


def perturb(base: np.ndarray, n: int, rng, sigma: float) -> np.ndarray:
    src = rng.integers(0, len(base), n)
    x = base[src] + rng.standard_normal((n, base.shape[1]), dtype=np.float32) * sigma
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def qps(search, Q: np.ndarray, batch: int, seconds: float = 8.0) -> float:
    n, t0, i = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        q = Q[i % len(Q): i % len(Q) + batch]
        if len(q) < batch:
            i = 0
            continue
        search(q)
        n += len(q)
        i += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    import faiss

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--sigma", type=float, default=0.022, help="noise per dimension (cosine to source ~0.9)")
    ap.add_argument("--write", action="store_true", default=True)
    a = ap.parse_args()
    faiss.omp_set_num_threads(2)  # building uses both cores; searches are measured on one below
    rng = np.random.default_rng(0)
    base = base_vectors(a.data)
    X = perturb(base, a.n, rng, a.sigma)
    Q = perturb(base, 200, np.random.default_rng(1), a.sigma)
    cos_to_src = float(np.mean(np.sum(perturb(base[:1], 1000, rng, a.sigma) * base[:1], axis=1)))
    d, k = X.shape[1], 100
    flat = faiss.IndexFlatIP(d)
    flat.add(X)
    _, truth = flat.search(Q, k)
    rows = []

    def run(name, index, build_s, set_param=None):
        faiss.omp_set_num_threads(1)
        _, got = index.search(Q, k)
        recall = float(np.mean([len(set(g) & set(t)) / k for g, t in zip(got, truth)]))
        single = qps(lambda q: index.search(q, k), Q, 1)
        batched = qps(lambda q: index.search(q, k), Q, 64)
        mem = faiss.serialize_index(index).nbytes if not isinstance(index, faiss.IndexRefineFlat) else \
            faiss.serialize_index(index.base_index).nbytes + X.nbytes
        rows.append({"name": name, "build_s": build_s, "mem_mb": mem / 2**20, "recall": recall,
                     "qps1": single, "qps64": batched})
        print(rows[-1], flush=True)
        faiss.omp_set_num_threads(2)

    run("Flat (exact)", flat, 0.0)
    for m, efc in ((32, 80), ):
        t0 = time.perf_counter()
        h = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = efc
        h.add(X)
        build = time.perf_counter() - t0
        for ef in (128, 256, 512):
            h.hnsw.efSearch = ef
            run(f"HNSW{m} (efConstruction {efc}, efSearch {ef})", h, build)
    nlist = int(4 * np.sqrt(a.n))
    t0 = time.perf_counter()
    ivf = faiss.index_factory(d, f"IVF{nlist},PQ48", faiss.METRIC_INNER_PRODUCT)
    ivf.train(X[rng.permutation(a.n)[: min(a.n, max(25 * nlist, 50_000), 100_000)]])
    refine = faiss.IndexRefineFlat(ivf)  # exact re-ranking of PQ's candidates with the full vectors
    refine.add(X)  # into both: the PQ codes and the flat vectors
    build = time.perf_counter() - t0
    for nprobe, kf in ((32, 4), (64, 8), (128, 8)):
        ivf.nprobe = nprobe
        refine.k_factor = kf
        run(f"IVF{nlist},PQ48 + exact re-rank (nprobe {nprobe}, k_factor {kf})", refine, build)
    exact1, exact64 = rows[0]["qps1"], rows[0]["qps64"]
    lines = [f"Machine: {machine()}. {a.n:,} items of dimension {d} (real e5 passage vectors of the demo and "
             f"Scientific catalogs, replicated with noise: cosine to the source item {cos_to_src:.2f}), 200 "
             "queries, k = 100; searches on one thread. Command: `.venv/bin/python bench/index_scale.py "
             f"--n {a.n}`.", "",
             "| index | build s | memory MB | recall@100 | QPS, single | × exact | QPS, batch 64 | × exact |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['build_s']:.0f} | {r['mem_mb']:.0f} | {r['recall']:.3f} | {r['qps1']:.0f} | "
                     f"{r['qps1'] / exact1:.1f} | {r['qps64']:.0f} | {r['qps64'] / exact64:.1f} |")
    ok = [r for r in rows[1:] if r["recall"] >= 0.95 and r["qps1"] >= 10 * exact1]
    lines += ["", "Target recall@100 ≥ 0.95 at ≥ 10 × the exact QPS (single queries): "
              + (f"met by {', '.join(r['name'] for r in ok)}." if ok else "not met by any index here."),
              "", "\"auto\" (`index_factory`, `ecrec.retrieval.index.choose_factory`) serves Flat up to 200,000 items (exact "
              "search took 14 ms per query at 100,000 here: 72 QPS) and HNSW32 with efSearch 256 above (at 100,000 "
              "items efSearch 128 reached only 0.947 recall@100; 256 reached 0.973). IVF-PQ with exact re-ranking "
              "builds faster but keeps the full vectors for the re-rank, so it saves no memory here; it is the choice "
              "when the vectors move to disk."]
    write_section("index-scale", "## Retrieval at catalog scale (issue 13)\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
