"""The drift monitor over HTTP: a reference chosen by the operator, then a stream that shifts language."""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration


def _post(client, user, texts):
    for t in texts:
        r = client.post("/v1/events", json={"user_id": user, "type": "review", "text": t})
        assert r.status_code == 200, r.text
    time.sleep(0.5)  # the ingress flushes observations every 100 ms


def test_language_shift_raises_the_drift_alarm(server, data_dir):
    from ecrec.learning.datasets import load_marc
    from ecrec.text.language import detect_language

    client, _ = server
    zh = [t for t in load_marc(data_dir, "zh", "test")[0][::40] if detect_language(t) == "zh"]
    en = [t for t in load_marc(data_dir, "en", "test")[0][::40] if detect_language(t) == "en"]
    assert len(zh) >= 95 and len(en) >= 25
    # 45 texts: enough left in the window whether or not the first 20 ever seen became the warm-up
    # reference; this refit clears what other tests sent
    _post(client, "drift-user", zh[:45])
    assert client.post("/v1/admin/drift/reference").status_code == 200
    _post(client, "drift-user", zh[45:70])
    ref = client.post("/v1/admin/drift/reference").json()
    assert ref["texts"] == 25  # exactly these Chinese reviews
    r = client.post("/v1/admin/drift/reference")
    assert r.status_code == 409 and "recent window holds 0 texts" in r.json()["detail"]

    _post(client, "drift-user", zh[70:95])
    s = client.get("/v1/admin/drift").json()
    assert s["ready"] and s["recent_texts"] == 25 and s["language_mix"] == {"zh": 1.0}
    assert not any("language" in a for a in s["alarms"]), s

    _post(client, "drift-user", en[:25])
    s = client.get("/v1/admin/drift").json()
    assert s["drift"] and s["language_mix"]["en"] == 0.5 and s["language_psi"] > 1, s
    assert any("language" in a for a in s["alarms"])

    # the history: a point as soon as the language alarm joined (part-way through the English reviews)
    points = client.get("/v1/admin/drift/history").json()["points"]
    joined = [p for p in points if "language_psi" in p["alarms"]]
    assert joined and joined[0]["alarm"] and joined[0]["language_psi"] > 0.25, points
    assert points[-1]["alarm"] and "language_psi" in points[-1]["alarms"], points[-1]


def test_drift_plot_command_draws_the_history(server, tmp_path):
    import os
    import subprocess
    import sys

    client, _ = server
    env = {**os.environ, "ECREC_API_KEY": client.headers["authorization"].split()[1]}
    out = tmp_path / "drift.png"
    p = subprocess.run([sys.executable, "-m", "ecrec.cli", "drift-plot", "--url", str(client.base_url), "--out",
                        str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    n = len(client.get("/v1/admin/drift/history").json()["points"])  # a minute may have added one since
    drawn = int(p.stdout.split(" points")[0])
    assert n - 1 <= drawn <= n and drawn >= 2 and out.stat().st_size > 20_000, p.stdout
    env["ECREC_API_KEY"] = "wrong-key-0123456789"
    p = subprocess.run([sys.executable, "-m", "ecrec.cli", "drift-plot", "--url", str(client.base_url), "--out",
                        str(tmp_path / "x.png")], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "401" in p.stderr
