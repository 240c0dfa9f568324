"""What the sequence retriever and co-visits cost per request, side by side in one run.

    .venv/bin/python bench/sequence_cost.py      # writes the "sequence" section of BENCHMARKS.md

On the Amazon Scientific catalog (4,385 items, the vectors ``ecrec eval`` caches), one
Recommender per setup, the same 200 shoppers (test histories replayed as purchases), k=10:
- the sequence model's query alone (one history -> one vector, torch, 1 thread);
- ``Recommender.recommend`` with the profile rule only / + co-visits / + sequence (the default).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, stats_ms, write_section  # noqa: E402

DATA = Path("../shared/data/recsys/amazon_scientific")


def main() -> None:
    import numpy as np
    import torch

    from ecrec.text.encoder import default_home
    from ecrec.evaluation.data import load_unisrec
    from ecrec.evaluation.harness import item_vectors
    from ecrec.evaluation.methods import Live
    from ecrec.retrieval.ranking import RankingConfig
    from ecrec.recommender import Recommender, RecommenderConfig, load_analyzer, load_sequence

    torch.set_num_threads(1)
    ds = load_unisrec(DATA)
    analyzer = load_analyzer(RecommenderConfig(sequence_model="none"))
    X = item_vectors(ds, analyzer.encoder, default_home() / "cache")
    split = ds.test.head(200)
    seq = load_sequence(None)
    ids = [it.id for it in ds.items]
    q_times = []
    for h in split.histories:
        t0 = time.perf_counter()
        seq.query(X[h], [ids[i] for i in h])
        q_times.append(time.perf_counter() - t0)
    setups = {"profile rule only": dict(covisit_weight=0.0, sequence_weight=0.0),
              "+ co-visits": dict(sequence_weight=0.0),
              "+ co-visits + sequence (default)": {}}
    rows = []
    for name, kw in setups.items():
        rec = Recommender(analyzer, RecommenderConfig(ranking=RankingConfig(explore_share=0.0, **kw),
                                                      sequence_model="none"))
        rec.ranker.sequence = seq
        rec.add_items(ds.items, X)
        live = Live(rec, ds)
        nows = [live.replay(u, h) for u, h in zip(split.users, split.histories)]
        samples = []
        for u, now in zip(split.users, nows):
            t0 = time.perf_counter()
            live.recommend(u, 10, now)
            samples.append(time.perf_counter() - t0)
        rows.append((name, stats_ms(samples)))
    base = rows[0][1]["p50"]
    qs = stats_ms(q_times)
    lines = ["| recommend (k=10, 4,385 items) | p50 ms | p99 ms | p50 vs profile rule |", "|---|---|---|---|"]
    lines += [f"| {n} | {s['p50']:.2f} | {s['p99']:.2f} | {s['p50'] / base:.2f}x |" for n, s in rows]
    body = "\n".join([
        "## Sequence retriever and co-visits: cost per request", "",
        f"Machine: {machine()}; torch threads 1.", "", "Command: `.venv/bin/python bench/sequence_cost.py`", "",
        f"- Sequence model query (history -> vector, {sum(p.numel() for p in seq.parameters()):,} parameters): "
        f"p50 {qs['p50']:.2f} ms, p99 {qs['p99']:.2f} ms over {len(q_times)} Scientific test histories "
        f"(mean length {np.mean([len(h) for h in split.histories]):.1f}).", "", *lines,
    ])
    write_section("sequence", body)


if __name__ == "__main__":
    main()
