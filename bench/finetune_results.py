"""Fine-tuned vs probe: full-test figures from the training runs, and the serving cost of the branch.

    .venv/bin/ecrec train sentiment --config training/configs/cpu.yaml --out runs/sentiment-cpu
    .venv/bin/ecrec train intent --config training/configs/cpu-intent.yaml --out runs/intent-cpu
    .venv/bin/python bench/finetune_results.py          # writes the "finetune" section
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["这款手机拍照效果很好，但电池续航不太理想", "The noise cancelling is great on flights.",
         "面料很舒服，尺码偏小，建议买大一号。", "Battery lasts two days, charging is fast."]


def analyze_rate(analyzer, batch: int, seconds: float = 5.0) -> float:
    texts = (TEXTS * 16)[:batch]
    analyzer.analyze(texts)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        analyzer.analyze(texts)
        n += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    import torch

    from ecrec.encoder import EncoderConfig, TextEncoder
    from ecrec.sentiment import LinearProbe, TextAnalyzer, load_head, probe_path

    torch.set_num_threads(2)
    probe = LinearProbe.load(probe_path("e5-small")).info
    lines = ["| model | MARC zh acc | zh macro-F1 | MARC en acc | en macro-F1 |", "|---|---|---|---|---|",
             f"| linear probe (frozen e5, shipped) | {probe['test_zh']['accuracy']:.4f} | {probe['test_zh']['macro_f1']:.4f} "
             f"| {probe['test_en']['accuracy']:.4f} | {probe['test_en']['macro_f1']:.4f} |"]
    for sent in sorted((ROOT / "runs").glob("sentiment-*/metrics.json"), key=lambda p: p.stat().st_mtime):
        m = json.loads(sent.read_text())
        c = m["config"]
        extra = f", +{c['extra_zh_binary']} online_shopping zh" if c.get("extra_zh_binary") else ""
        cal = ", dev-calibrated" if c.get("calibrate") else ""
        lines.append(f"| `{sent.parent.name}`: branch K={c['branch_layers']}, {m['epochs_run']} epochs{extra}{cal} "
                     f"({m['fit_wall_s'] / 60:.0f} min) "
                     f"| {m['marc_zh_test']['accuracy']:.4f} | {m['marc_zh_test']['macro_f1']:.4f} "
                     f"| {m['marc_en_test']['accuracy']:.4f} | {m['marc_en_test']['macro_f1']:.4f} |")
    lines.append("| target (issue 4) | 0.80 | | 0.82 | |")
    intent_lines = []
    inte = ROOT / "runs" / "intent-cpu" / "metrics.json"
    if inte.exists():
        m = json.loads(inte.read_text())
        h, zh = m["bitext_heldout_20pct"], m["zh_project_test"]
        intent_lines = [
            "", "| intents (27, Bitext) | accuracy | macro-F1 | n |", "|---|---|---|---|",
            f"| held-out 20 % (English) | {h['accuracy']:.4f} | {h['macro_f1']:.4f} | {h['n']} |",
            f"| project's Chinese test set (zero-shot transfer) | {zh['accuracy']:.4f} | {zh['macro_f1']:.4f} | {zh['n']} |",
        ]
    enc = TextEncoder(EncoderConfig(num_threads=2))
    cost = ["", "| serving: `TextAnalyzer.analyze` (vector + sentiment [+ intent], clauses included) "
            "| batch 1 texts/s | batch 32 texts/s | vs probe (b1 / b32) |", "|---|---|---|---|"]
    art = ROOT / "ecrec" / "artifacts"
    setups = (("probe only", probe_path("e5-small"), None),
              ("sentiment branch", art / "sentiment_branch_e5-small.safetensors", None),
              ("sentiment branch + intent branch (the default)", art / "sentiment_branch_e5-small.safetensors",
               art / "intent_branch_e5-small.safetensors"))
    rates = {}
    for name, head, intent in setups:
        if Path(head).exists() and (intent is None or Path(intent).exists()):
            an = TextAnalyzer(enc, load_head(head, enc), load_head(intent, enc) if intent else None)
            rates[name] = (analyze_rate(an, 1), analyze_rate(an, 32))
            p = rates.get("probe only", rates[name])
            cost.append(f"| {name} | {rates[name][0]:.1f} | {rates[name][1]:.1f} "
                        f"| {rates[name][0] / p[0]:.2f} / {rates[name][1] / p[1]:.2f} |")
    body = "\n".join(["## Fine-tuning results (full test sets)", "", f"Machine: {machine()}.", "",
                      "Commands: see `bench/finetune_results.py`'s docstring.", "", *lines, *intent_lines, *cost])
    write_section("finetune", body)


if __name__ == "__main__":
    main()
