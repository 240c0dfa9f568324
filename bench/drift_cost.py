"""The drift check's cost: ecrec's numpy monitor vs evidently's DataDriftPreset on the same windows.

    pip install --target /tmp/evd-lib evidently==0.7.23 "pandas<3"   # once, outside the venv (0.7.23 breaks on pandas 3)
    .venv/bin/python bench/drift_cost.py --evidently /tmp/evd-lib   # writes the "drift-cost" section

Both sides get a reference and a recent window of 2,000 texts each: 384-d unit vectors (a shifted
recent window) and their sentiment, intent and language labels. ecrec scores them with
``DriftMonitor.scores`` (mean shift, PSI along 8 principal directions, PSI of the three mixes).
evidently runs ``DataDriftPreset`` on DataFrames of the same information: the 8 projections as
numeric columns plus the three label columns (the like-for-like run), and on all 384 embedding
dimensions (what one would hand it without the projection). evidently runs in its own process
with its own dependencies (``--evidently`` is the folder they were installed into), and with its
telemetry off. Medians of repeated runs.
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

N, DIM = 2000, 384


def windows(seed: int = 0):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((N, DIM)).astype(np.float32)
    rec = (rng.standard_normal((N, DIM)) + 0.15 * rng.standard_normal(DIM)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    rec /= np.linalg.norm(rec, axis=1, keepdims=True)
    labels = lambda p: {  # noqa: E731
        "sentiment": rng.choice(["negative", "neutral", "positive"], N, p=p).tolist(),
        "intent": rng.choice(["none", "track_order", "get_refund"], N, p=[0.9, 0.05, 0.05]).tolist(),
        "language": rng.choice(["zh", "en"], N, p=[0.7, 0.3]).tolist()}
    return ref, rec, labels([0.3, 0.2, 0.5]), labels([0.5, 0.2, 0.3])


def evidently_side(path: str, seconds: float = 20.0) -> None:
    """Runs in a process whose sys.path starts with evidently's folder."""
    os.environ["EVIDENTLY_DISABLE_TELEMETRY"] = "1"
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    z = np.load(path)
    ref, rec, proj_ref, proj_rec = z["ref"], z["rec"], z["proj_ref"], z["proj_rec"]
    meta = json.loads(Path(path).with_suffix(".json").read_text())
    out = {}
    for name, (a, b) in {"8 projections + 3 label columns": (proj_ref, proj_rec),
                         "384 embedding dimensions + 3 label columns": (ref, rec)}.items():
        cols = [f"x{j}" for j in range(a.shape[1])]

        def frame(x, labels):
            df = pd.DataFrame(x, columns=cols)
            for k, v in labels.items():
                df[k] = v
            return df

        definition = DataDefinition(numerical_columns=cols, categorical_columns=["sentiment", "intent", "language"])
        dref = Dataset.from_pandas(frame(a, meta["ref"]), data_definition=definition)
        drec = Dataset.from_pandas(frame(b, meta["rec"]), data_definition=definition)
        times, t_end = [], time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(times) < 3:
            t0 = time.perf_counter()
            Report([DataDriftPreset()]).run(current_data=drec, reference_data=dref)
            times.append(time.perf_counter() - t0)
        out[name] = float(np.median(times))
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--evidently", default="/tmp/evd-lib", help="folder evidently was pip-installed into (--target)")
    ap.add_argument("--worker", default=None)
    args = ap.parse_args()
    if args.worker:
        return evidently_side(args.worker)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine, write_section

    from ecrec.operations.drift import DriftConfig, DriftMonitor, Reference

    ref, rec, lab_ref, lab_rec = windows()
    reference = Reference.fit(ref, lab_ref["sentiment"], lab_ref["intent"], lab_ref["language"])
    m = DriftMonitor(reference, DriftConfig(window=N, min_recent=100))
    for j in range(N):
        m.observe_text(rec[j], lab_rec["sentiment"][j], lab_rec["intent"][j], lab_rec["language"][j])
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        scores = m.scores()
        times.append(time.perf_counter() - t0)
    ours = float(np.median(times))
    t0 = time.perf_counter()
    for j in range(N):
        m.observe_text(rec[j], lab_rec["sentiment"][j], lab_rec["intent"][j], lab_rec["language"][j])
    observe_us = (time.perf_counter() - t0) / N * 1e6

    tmp = Path("/tmp/drift-cost.npz")
    np.savez(tmp, ref=ref, rec=rec, proj_ref=ref @ reference.directions.T, proj_rec=rec @ reference.directions.T)
    tmp.with_suffix(".json").write_text(json.dumps({"ref": lab_ref, "rec": lab_rec}))
    env = dict(os.environ, PYTHONPATH=args.evidently, EVIDENTLY_DISABLE_TELEMETRY="1")
    res = subprocess.run([sys.executable, __file__, "--worker", str(tmp)], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"evidently side failed:\n{res.stderr[-3000:]}")
    theirs = json.loads(res.stdout.strip().splitlines()[-1])
    rows = [("ecrec `DriftMonitor.scores` (numpy)", ours)] + [(f"evidently 0.7.23 `DataDriftPreset`, {k}", v)
                                                            for k, v in theirs.items()]
    body = ["## Drift check cost", "",
            f"Machine: {machine()}. Command: `.venv/bin/python bench/drift_cost.py --evidently /tmp/evd-lib` "
            f"(reference and recent windows of {N:,} texts, 384-d, with sentiment, intent and language labels; "
            "the recent window is shifted).", "",
            "| drift check over the two windows | median ms | × ecrec |", "|---|---|---|"]
    for name, t in rows:
        body.append(f"| {name} | {t * 1000:.1f} | {t / ours:.0f} |")
    body += ["", f"Adding one text to ecrec's recent window costs {observe_us:.1f} µs. ecrec's scores for this pair: "
             f"embedding PSI {scores['embedding']['psi_max']:.2f}, sentiment PSI {scores['sentiment_psi']:.2f}, "
             f"alarms {len(scores['alarms'])}. The monitor scores at most once a second; evidently's like-for-like "
             "run takes seconds of a core per check, so on the live path it could only run every few minutes in a "
             "process of its own. It also brings ~25 packages (pandas, scipy, "
             "statsmodels, plotly, litestar, …) and telemetry that is on unless disabled. ecrec keeps the numpy "
             "monitor on the live path; evidently stays an offline tool for reports."]
    write_section("drift-cost", "\n".join(body))


if __name__ == "__main__":
    main()
