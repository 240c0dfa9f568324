"""Sentiment and intent branches: quality on data they never trained on, and what each costs to serve.

Quality comes from the reports of `ecrec eval-text` (the serving path, full test sets), one JSON per
branch in docs/eval/text/; the serving cost is measured here, every head in one run.

    .venv/bin/ecrec train sentiment --config training/configs/cpu.yaml --out runs/sentiment-k6
    .venv/bin/ecrec train intent --config training/configs/cpu-intent.yaml --out runs/intent-cpu
    .venv/bin/ecrec eval-text sentiment --head runs/sentiment-k6/branch.safetensors --out docs/eval/text/sentiment-k6.json
    .venv/bin/ecrec eval-text intent --head runs/intent-cpu/branch.safetensors --out docs/eval/text/intent-cpu.json
    .venv/bin/python bench/finetune_results.py          # writes the "finetune" section of BENCHMARKS.md
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "docs" / "eval" / "text"
TEXTS = ["这款手机拍照效果很好，但电池续航不太理想", "The noise cancelling is great on flights.",
         "面料很舒服，尺码偏小，建议买大一号。", "Battery lasts two days, charging is fast."]


def analyze_rate(analyzer, batch: int, seconds: float = 4.0) -> float:
    texts = (TEXTS * 16)[:batch]
    analyzer.analyze(texts)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        analyzer.analyze(texts)
        n += batch
    return n / (time.perf_counter() - t0)


def _f(x, digits=3):
    return "" if x is None else f"{x:.{digits}f}"


def _training(r: dict) -> str:
    t = r.get("training")
    if not t:
        return ""
    c = t["config"]
    extra = f", +{c['extra_zh_binary']:,} zh binary" if c.get("extra_zh_binary") else ""
    limit = f", {c['train_limit']:,}/lang" if c.get("train_limit") else ""
    return f"{t['epochs_run']} ep{extra}{limit}, {t['fit_wall_s'] / 60:.0f} min"


def sentiment_rows(reports: list[dict]) -> list[str]:
    lines = ["| sentiment head | K | training (2 CPU workers) | MARC zh acc / F1 | MARC en acc / F1 "
             "| held-out categories: label acc | polarity acc | called neutral |",
             "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        s, h = r["sets"], r.get("heldout_categories", {})
        lines.append(f"| `{r['head']}` "
                     f"| {r['branch_layers']} | {_training(r)} "
                     f"| {_f(s['marc_zh_test']['accuracy'])} / {_f(s['marc_zh_test']['macro_f1'])} "
                     f"| {_f(s['marc_en_test']['accuracy'])} / {_f(s['marc_en_test']['macro_f1'])} "
                     f"| {_f(h.get('label_accuracy'))} | {_f(h.get('polarity_accuracy'))} "
                     f"| {_f(h.get('neutral_share'))} |")
    return lines


def intent_rows(reports: list[dict]) -> list[str]:
    lines = ["| intent head | K | Bitext held-out groups acc / F1 | Bitext random rows | zh test acc / F1 "
             "| MARC reviews → none | project none texts → none | service → not none | clarify below "
             "| share below (groups / zh / reviews) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        s = r["sets"]
        service = (s["bitext_heldout_groups"]["n"] * (1 - s["bitext_heldout_groups"]["share_none"])
                   + s["zh_test"]["n"] * (1 - s["zh_test"]["share_none"])) / (s["bitext_heldout_groups"]["n"]
                                                                             + s["zh_test"]["n"])
        marc_none = (s["none_marc_zh"]["share_none"] + s["none_marc_en"]["share_none"]) / 2
        lines.append(f"| `{r['head']}` | {r['branch_layers']} "
                     f"| {_f(s['bitext_heldout_groups']['accuracy'])} / {_f(s['bitext_heldout_groups']['macro_f1'])} "
                     f"| {_f(s['bitext_random_rows']['accuracy'])} "
                     f"| {_f(s['zh_test']['accuracy'])} / {_f(s['zh_test']['macro_f1'])} "
                     f"| {_f(marc_none)} | {_f(s['none_project']['share_none'])} | {_f(service)} "
                     f"| {_f(r['clarify_below'], 2)} | {_f(s['bitext_heldout_groups']['share_below'])} / "
                     f"{_f(s['zh_test']['share_below'])} / {_f(s['none_marc_zh']['share_below'])} |")
    return lines


def shaped_branch(encoder, k: int):
    """A sentiment-shaped branch of K layers (copies of the encoder's top K, a fresh head): what a
    trained K-layer branch costs to serve, without training one."""
    import copy

    from torch import nn

    from ecrec.text.classifier import Branch
    from ecrec.text.sentiment import BranchHead

    model = encoder.model
    layers = nn.ModuleList(copy.deepcopy(model.encoder.layer[model.config.num_hidden_layers - k:]))
    branch = Branch(layers, model.config.hidden_size, 3).to(encoder.device, encoder.dtype).eval()
    return BranchHead(branch, {"labels": ["negative", "neutral", "positive"], "name": f"shape-k{k}"})


def main() -> None:
    import torch

    from ecrec.text.encoder import EncoderConfig, TextEncoder
    from ecrec.text.sentiment import TextAnalyzer, intent_path, load_head, probe_path

    torch.set_num_threads(2)
    reports = [json.loads(p.read_text()) for p in sorted(REPORTS.glob("*.json"))]
    sent = sorted((r for r in reports if "heldout_categories" in r), key=lambda r: (r["branch_layers"], r["path"]))
    inte = [r for r in reports if "clarify_below" in r]
    enc = TextEncoder(EncoderConfig(num_threads=2))
    cost = ["| serving: `TextAnalyzer.analyze` (vector + sentiment + intent, clauses included) | sentiment K "
            "| work vs one pass, in theory | batch 1 texts/s | batch 32 texts/s | vs probe (b1 / b32) |",
            "|---|---|---|---|---|---|"]
    intent = load_head(intent_path("e5-small"), enc) if intent_path("e5-small").exists() else None
    k_intent = len(intent.branch.layers) if intent else 0
    heads = [("probe (frozen e5) + intent branch", probe_path("e5-small"), 0)]
    for k in (3, 6, 12):  # the cost depends on the branch's shape, not on its weights
        heads.append((f"sentiment branch K={k} + intent branch", None, k))
    base = None
    for name, path, k in heads:
        an = TextAnalyzer(enc, load_head(path, enc) if path else shaped_branch(enc, k), intent)
        rate = (analyze_rate(an, 1), analyze_rate(an, 32))
        base = base or rate
        cost.append(f"| {name} | {k or '-'} | {(12 + k + k_intent) / 12:.2f} | {rate[0]:.1f} | {rate[1]:.1f} "
                    f"| {rate[0] / base[0]:.2f} / {rate[1] / base[1]:.2f} |")
    body = "\n".join(["## Sentiment and intent branches (full test sets, data never trained on)", "",
                      f"Machine: {machine()}.", "", "Commands: see `bench/finetune_results.py`'s docstring; "
                      "the figures come from `ecrec eval-text` (the serving path) in `docs/eval/text/`.", "",
                      *sentiment_rows(sent), "", *intent_rows(inte), "", *cost])
    write_section("finetune", body)


if __name__ == "__main__":
    main()
