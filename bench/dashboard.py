"""``make dashboard``: the dashboard's series from a live graph, plotted (no Grafana here).

Starts ``ecrec serve`` on 127.0.0.1 with a fresh state directory, an API key and a two-arm A/B test,
then plays shoppers for ``--minutes``: each asks for recommendations, clicks what it is shown
(more often near the top, and more often items from the "interest" source, so the rates differ by
position and source), sometimes buys, and writes a review. Halfway through, the reviews switch
from Chinese to English (MARC test reviews from ``--data``), which the drift monitor must flag.
Every 10 s it reads ``/v1/admin/metrics/summary`` (last 1-2 minutes: whole one-minute buckets) and ``/v1/admin/drift``; the series
go to ``docs/eval/dashboard.json`` and ``docs/img/dashboard.png``, the same series as the Grafana
dashboard in ``deployments/grafana/ecrec.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
AB = '{"arms": {"control": {}, "explore20": {"explore_share": 0.2}}, "salt": "dashboard"}'


def start(port: int, state: str, key: str) -> subprocess.Popen:
    env = {**os.environ, "ECREC_API_KEYS": f'[{{"name": "dash", "key": "{key}", "rate_per_s": 100000}}]'}
    server = subprocess.Popen([sys.executable, "-m", "ecrec.cli", "serve", "--port", str(port), f"state_dir={state}",
                               "namespace=ecrec-dashboard", f"ab_test={AB}", "drift_min_recent=100"],
                              env=env, start_new_session=True)
    deadline = time.time() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.time() > deadline:
            raise SystemExit("the server did not become ready")
        time.sleep(1)


def play(c: httpx.Client, rng: random.Random, user: str, review: str) -> None:
    recs = c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    for item in recs["items"]:
        p = 0.25 / item["position"] ** 0.7 * (1.6 if item["source"] == "interest" else 1.0)
        if rng.random() < p:
            c.post("/v1/events", json={"user_id": user, "type": "click", "item_id": item["item_id"],
                                       "request_id": recs["request_id"]})
            if rng.random() < 0.2:
                c.post("/v1/events", json={"user_id": user, "type": "purchase", "item_id": item["item_id"],
                                           "request_id": recs["request_id"]})
    if rng.random() < 0.5:
        c.post("/v1/events", json={"user_id": user, "type": "review", "text": review})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--port", type=int, default=8012)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from ecrec.learning.datasets import load_marc

    zh, _ = load_marc(args.data, "zh", "test")
    en, _ = load_marc(args.data, "en", "test")
    rng = random.Random(0)
    key = secrets.token_urlsafe(24)
    series = []
    with tempfile.TemporaryDirectory(prefix="ecrec-dash-") as state:
        server = start(args.port, state, key)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=60,
                              headers={"Authorization": f"Bearer {key}"}) as c:
                t0 = time.time()
                end, next_read = t0 + args.minutes * 60, t0 + 10
                users = [f"shopper-{j}" for j in range(60)]
                # the drift reference: the first 100 texts after start (Chinese reviews of every star; the
                # test file is sorted by star, so they are drawn at random) and no item events yet
                for j, text in enumerate(rng.sample(zh, 100)):
                    c.post("/v1/events", json={"user_id": users[j % 60], "type": "review", "text": text})
                for u in users:  # every shopper starts with one interest
                    c.post("/v1/events", json={"user_id": u, "type": "click", "item_id": rng.choice(
                        ["phones-001", "cameras-002", "headphones-003", "laptops-001", "clothing-002"])})
                while time.time() < end:
                    halfway = time.time() - t0 > args.minutes * 30
                    play(c, rng, rng.choice(users), rng.choice(en if halfway else zh))
                    if time.time() >= next_read:
                        m = c.get("/v1/admin/metrics/summary", params={"window_s": 120}).json()
                        d = c.get("/v1/admin/drift").json()
                        series.append({"t": round(time.time() - t0, 1), "metrics": m, "drift": d})
                        next_read += 10
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=120)
    out = ROOT / "docs" / "eval" / "dashboard.json"
    out.write_text(json.dumps(series, indent=1, ensure_ascii=False))
    plot(series, ROOT / "docs" / "img" / "dashboard.png", args.minutes * 30)
    print(f"{len(series)} readings -> {out}, docs/img/dashboard.png")


def plot(series: list[dict], path: Path, switch_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in series]
    fig, ax = plt.subplots(2, 2, figsize=(12, 7), constrained_layout=True)

    def lines(a, key, title):
        names = sorted({k for s in series for k in s["metrics"][key]})
        for n in names:
            a.plot(t, [(s["metrics"][key].get(n) or {}).get("ctr") for s in series], marker=".", label=n)
        a.set_title(title)
        a.set_ylabel("CTR (last 1-2 min)")
        a.legend(fontsize=8)

    lines(ax[0, 0], "by_source", "CTR by source")
    lines(ax[0, 1], "by_position", "CTR by position")
    ax[1, 0].plot(t, [s["metrics"]["lists"] / max(s["metrics"]["span_s"], 1.0) for s in series], marker=".",
                  label="lists/s")
    ax[1, 0].plot(t, [s["metrics"]["coverage"] or 0 for s in series], marker=".", label="catalog coverage (1-2 min)")
    ax[1, 0].set_title("Lists served and coverage")
    ax[1, 0].legend(fontsize=8)
    d = ax[1, 1]
    d.plot(t, [(s["drift"].get("embedding") or {}).get("psi_max") for s in series], marker=".", label="embedding PSI (max)")
    d.plot(t, [s["drift"].get("language_psi") for s in series], marker=".", label="language mix PSI")
    d.axhline(0.5, color="grey", ls="--", lw=0.8)
    d.axvline(switch_s, color="red", ls=":", lw=1, label="reviews switch zh → en")
    d.set_yscale("symlog", linthresh=1)
    d.set_title("Drift against the first texts after start")
    d.legend(fontsize=8)
    for a in ax.flat:
        a.set_xlabel("seconds")
    fig.suptitle("ecrec online metrics (docs/eval/dashboard.json; same series as deployments/grafana/ecrec.json)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
