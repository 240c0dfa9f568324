"""How much neutral to give away: the sentiment head's class offsets, chosen on dev only.

Reads the logits `ecrec eval-text sentiment --out X.json` saved next to X (X.logits.npz; they are
the served head's, offsets included), re-fits the offsets for a range of weights on the binary dev
reviews (clear reviews, where neutral is always wrong), and prints dev and test figures per weight.

    .venv/bin/python bench/sentiment_calibration.py docs/eval/text/sentiment-k6.logits.npz
"""
from __future__ import annotations

import json
import sys

import numpy as np

from ecrec.learning.finetune_data import calibrate_bias, evaluate_binary
from ecrec.evaluation.metrics import accuracy_macro_f1


def figures(z: dict, offsets: np.ndarray) -> dict:
    out = {}
    for name in ("dev", "marc_zh_test", "marc_en_test"):
        acc, f1 = accuracy_macro_f1(z[f"{name}__labels"], (z[f"{name}__logits"] + offsets).argmax(1), 3)
        out[name] = (round(acc, 4), round(f1, 4))
    b = evaluate_binary(z["binary_dev__logits"] + offsets, z["binary_dev__labels"])
    out["binary_dev_label_acc"] = round(b["label_accuracy"], 4)
    held = [k[: -len("__logits")] for k in z if k.startswith("shopping_heldout_") and k.endswith("__logits")]
    lg = np.concatenate([z[f"{h}__logits"] for h in held]) + offsets
    m = evaluate_binary(lg, np.concatenate([z[f"{h}__labels"] for h in held]))
    out["heldout_label_acc"], out["heldout_polarity"] = round(m["label_accuracy"], 4), round(m["polarity_accuracy"], 4)
    return out


def main(path: str) -> None:
    z = dict(np.load(path))
    rows = {"as shipped": (np.zeros(3, np.float32), figures(z, np.zeros(3, np.float32)))}
    for w in (0.0, 0.25, 0.5, 1.0, 2.0):
        off, _ = calibrate_bias(z["dev__logits"], z["dev__labels"], 3, binary_logits=z["binary_dev__logits"],
                                binary_y=z["binary_dev__labels"], binary_weight=w)
        rows[f"binary weight {w}"] = (off, figures(z, off))
    for name, (off, f) in rows.items():
        print(json.dumps({"setting": name, "extra_offsets": [round(float(v), 3) for v in off], **f}, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
