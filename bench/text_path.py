"""The CPU text path: ``TextAnalyzer.analyze`` throughput, a baseline commit vs this tree in fp32
and in int8, side by side; and how far int8 moves the answers from fp32.

    .venv/bin/python bench/text_path.py                  # baseline 1955752 (before planned batches), writes "text-path"
    .venv/bin/python bench/text_path.py --agree 500 --rounds 5 --repeat 2

Each side runs in its own process (``PYTHONPATH`` = its tree; the baseline is checked out with
``git worktree`` into /tmp) with 2 torch threads, on the same 32 MARC test reviews (16 zh, 16 en,
seeded): the shipped heads (K=6 sentiment branch, K=2 intent branch), the same work per text.
Each side analyses the batch ``--rounds`` times after one warm-up, in ``--repeat`` processes that
take turns with the other sides' (the machine drifts by tens of percent within minutes); the median
of all rounds is reported.
``ECREC_BENCH_EXTRA_PATH`` goes on every side's ``PYTHONPATH`` after its tree: a folder of other
package versions, e.g. the transformers an older baseline needs (``pip install --target``).
Agreement, on ``--agree`` other MARC test texts per language: this tree's fp32 against the
baseline's (the same weights: labels must not move), and int8 against fp32; sentiment, clause and
intent labels, and the cosine between their retrieval vectors.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def reviews(data_dir: str, n_per_lang: int, seed: int = 0) -> list[str]:
    from ecrec.learning.datasets import load_marc

    out = []
    for lang in ("zh", "en"):
        texts, _ = load_marc(data_dir, lang, "test")
        out += random.Random(seed).sample(texts, n_per_lang)
    return out


def analyzer(quantize: str):
    from ecrec.text.encoder import EncoderConfig, TextEncoder
    from ecrec.text.sentiment import TextAnalyzer, head_path, intent_head_path, load_head

    kw = {"quantize": quantize} if quantize != "none" else {}
    enc = TextEncoder(EncoderConfig(num_threads=2, **kw))
    return TextAnalyzer(enc, load_head(head_path(None, "e5-small"), enc),
                        load_head(intent_head_path(None, "e5-small"), enc))


def worker(quantize: str, data_dir: str, rounds: int, out: str, agree_n: int) -> None:
    """Runs inside one tree's interpreter: texts/s of ``analyze`` on the 32 reviews, then its
    answers on ``agree_n`` other MARC test reviews per language (for the agreement)."""
    from ecrec.text.prepare import split_clauses

    texts = reviews(data_dir, 16)
    an = analyzer(quantize)
    an.analyze(texts)  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        an.analyze(texts)
        times.append(time.perf_counter() - t0)
    rows = len(texts) + sum(len(c) for c in (split_clauses(t) for t in texts) if len(c) > 1)
    Path(out).write_text(json.dumps({"times": times, "texts": len(texts), "rows": rows,
                                     "chars": float(np.mean([len(t) for t in texts]))}))
    if agree_n <= 0:
        return
    res = an.analyze(reviews(data_dir, agree_n, seed=1))
    np.savez(Path(out).with_suffix(".npz"), sentiment=[a.sentiment.label for a in res],
             intent=[a.intent.label for a in res], vectors=np.stack([a.vector for a in res]),
             clauses=[c.sentiment.label for a in res for c in a.clauses])


def agreement(ref: dict, other: dict) -> dict:
    """How far ``other``'s answers are from ``ref``'s, on the same texts."""
    cos = (ref["vectors"] * other["vectors"]).sum(1)
    return {"texts": len(ref["sentiment"]), "sentiment": float(np.mean(ref["sentiment"] == other["sentiment"])),
            "intent": float(np.mean(ref["intent"] == other["intent"])),
            "clauses": float(np.mean(ref["clauses"] == other["clauses"])) if len(ref["clauses"]) == len(
                other["clauses"]) else float("nan"),
            "cos_min": float(cos.min()), "cos_mean": float(cos.mean())}


def run_side(tree: Path, quantize: str, data_dir: str, rounds: int, agree_n: int) -> tuple[dict, dict]:
    out = Path(tempfile.mkdtemp(prefix="ecrec-text-path-")) / "side.json"
    path = os.pathsep.join([str(tree), *filter(None, [os.environ.get("ECREC_BENCH_EXTRA_PATH")])])
    env = dict(os.environ, PYTHONPATH=path, TOKENIZERS_PARALLELISM="false")
    subprocess.run([sys.executable, __file__, "--worker", quantize, "--data", data_dir, "--rounds", str(rounds),
                    "--agree", str(agree_n), "--out", str(out)], check=True, env=env, cwd=tree)
    answers = {}
    if agree_n > 0:
        with np.load(out.with_suffix(".npz")) as z:
            answers = {k: z[k] for k in z.files}
    timing = json.loads(out.read_text())
    shutil.rmtree(out.parent)
    return timing, answers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="1955752")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="processes per side, taking turns with the other sides")
    ap.add_argument("--agree", type=int, default=300, help="MARC test texts per language for the agreement")
    ap.add_argument("--worker", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.worker is not None:
        return worker(args.worker, args.data, args.rounds, args.out, args.agree)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine, write_section

    base = Path(f"/tmp/ecrec-baseline-{args.baseline}")
    if not base.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], check=True, cwd=ROOT)
    specs = [("baseline " + args.baseline + ", fp32", base, "none"), ("this tree, fp32", ROOT, "none"),
             ("this tree, int8", ROOT, "int8")]
    runs = [(name, run_side(tree, q, args.data, args.rounds, args.agree)) for name, tree, q in specs]
    for _ in range(args.repeat - 1):  # the sides take turns, so that the machine's drift hits them alike
        for (name, tree, q), (_, (timing, _)) in zip(specs, runs):
            timing["times"] += run_side(tree, q, args.data, args.rounds, 0)[0]["times"]
    for _, (timing, _) in runs:
        timing["seconds"] = float(np.median(timing["times"]))
    sides = [(name, timing) for name, (timing, _) in runs]
    same = agreement(runs[0][1][1], runs[1][1][1])  # this tree's fp32 against the baseline's
    agree = agreement(runs[1][1][1], runs[2][1][1])  # int8 against fp32
    print(json.dumps({"sides": sides, "fp32_vs_baseline": same, "int8_vs_fp32": agree}, indent=1))
    base_s = sides[0][1]["seconds"]
    first = sides[0][1]
    body = [
        "## CPU text path: `TextAnalyzer.analyze`",
        "",
        f"Machine: {machine()}. Command: `.venv/bin/python bench/text_path.py` (each side in its own process, "
        f"2 torch threads; {first['texts']} MARC test reviews, 16 zh + 16 en, {first['chars']:.0f} characters on "
        f"average, {first['rows']} encoder rows with their clauses; shipped heads: K=6 sentiment, K=2 intent; "
        f"median of {args.repeat} x {args.rounds} rounds: the sides take turns, {args.repeat} processes each, "
        f"{args.rounds} rounds after a warm-up in each).",
        "",
        "| side | seconds per batch | reviews/s | speed-up vs baseline |",
        "|---|---|---|---|",
    ]
    for name, r in sides:
        body.append(f"| {name} | {r['seconds']:.2f} | {r['texts'] / r['seconds']:.1f} | "
                    f"{base_s / r['seconds']:.2f}x |")
    body += ["", f"This tree's fp32 against the baseline on {same['texts']} other MARC test reviews ({args.agree} per "
             f"language): sentiment labels agree on {same['sentiment']:.1%}, clause labels on {same['clauses']:.1%}, "
             f"intent labels on {same['intent']:.1%}; retrieval vectors at cosine {same['cos_mean']:.6f} on average "
             f"(lowest {same['cos_min']:.6f})."]
    body += ["", f"int8 against fp32 on {agree['texts']} other MARC test reviews ({args.agree} per language): "
             f"sentiment labels agree on {agree['sentiment']:.1%}, clause labels on {agree['clauses']:.1%}, intent "
             f"labels on {agree['intent']:.1%}; retrieval vectors at cosine {agree['cos_mean']:.4f} on average "
             f"(lowest {agree['cos_min']:.4f})."]
    write_section("text-path", "\n".join(body))


if __name__ == "__main__":
    main()
