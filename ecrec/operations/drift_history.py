"""Drift scores over time: a point a minute for a day, plus one whenever the alarms raised change,
and the plot an operator reads (``ecrec drift-plot``, from ``GET /v1/admin/drift/history``)."""
from __future__ import annotations

from collections import deque
from pathlib import Path

from ecrec.operations.drift import DriftConfig

SIGNALS = ("embedding_psi_max", "embedding_mean_shift", "sentiment_psi", "intent_psi", "language_psi")


def flat_scores(scores: dict) -> dict[str, float]:
    """The numeric scores of ``DriftMonitor.scores()`` by signal name (what Prometheus exports)."""
    out = {"embedding_psi_max": scores["embedding"]["psi_max"],
           "embedding_mean_shift": scores["embedding"]["mean_shift"]}
    out.update({k: scores[k] for k in SIGNALS[2:] if k in scores})
    return out


class DriftHistory:
    """The last ``keep`` points; a new point once ``every_s`` passed since the last, or at once
    when the set of signals in alarm changes (so a short alarm, or a second signal joining one
    already raised, is never missed between two minutes)."""

    def __init__(self, every_s: float = 60.0, keep: int = 1440):
        self.every_s = every_s
        self.points: deque = deque(maxlen=keep)

    def add(self, ts: float, scores: dict) -> bool:
        """Record ``scores`` (``DriftMonitor.scores()``) taken at ``ts``; False when not due."""
        if not scores.get("ready"):
            return False
        signals = sorted(scores.get("alarm_signals", []))
        last = self.points[-1] if self.points else None
        if last is not None and ts - last["ts"] < self.every_s and signals == last["alarms"]:
            return False
        self.points.append({"ts": ts, "alarm": bool(scores["drift"]), "alarms": signals, **flat_scores(scores)})
        return True


def plot_history(points: list[dict], path: str | Path, config: DriftConfig = DriftConfig(),
                 title: str = "ecrec drift") -> Path:
    """PSI scores and the embedding mean shift over time, with their alarm thresholds; minutes
    under alarm shaded. ``points``: ``DriftHistory.points`` (JSON from the history route)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not points:
        raise ValueError("no drift points yet: the monitor needs a reference and min_recent texts first")
    t0 = points[0]["ts"]
    minutes = [(p["ts"] - t0) / 60 for p in points]
    fig, (psi_ax, shift_ax) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    for name in ("embedding_psi_max", "sentiment_psi", "intent_psi", "language_psi"):
        if any(name in p for p in points):
            psi_ax.plot(minutes, [p.get(name, float("nan")) for p in points], marker=".", label=name)
    psi_ax.axhline(config.psi_alarm, color="tab:red", ls="--", lw=1, label=f"mix alarm {config.psi_alarm}")
    psi_ax.axhline(config.embedding_psi_alarm, color="tab:purple", ls=":", lw=1,
                   label=f"embedding alarm {config.embedding_psi_alarm}")
    psi_ax.set_ylabel("PSI")
    psi_ax.legend(fontsize=7, ncol=2)
    shift_ax.plot(minutes, [p["embedding_mean_shift"] for p in points], marker=".", color="tab:green")
    shift_ax.axhline(config.mean_shift_alarm, color="tab:red", ls="--", lw=1)
    shift_ax.set_ylabel("embedding mean shift")
    shift_ax.set_xlabel("minutes since the first point")
    for ax in (psi_ax, shift_ax):
        for a, b, p in zip(minutes, minutes[1:] + minutes[-1:], points):
            if p["alarm"]:
                ax.axvspan(a, max(b, a + 0.05), color="tab:red", alpha=0.12, lw=0)
    psi_ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
