"""Shards on a node that dies, mid-stream: they come back on another node and load their users
from Redis (issue 13). The cluster runs in a process of its own (``multinode_check.py``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_killed_node_loses_no_acknowledged_event(redis_url, tmp_path):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    p = subprocess.run([sys.executable, "-m", "tests.integration.multinode_check", redis_url, str(tmp_path / "state")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, f"no result (rc {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    r = json.loads(line[len("RESULT "):])
    assert all(b["node_id"] == r["node_a"] for b in r["before"]), r["before"]  # pinned to node A
    assert r["node_a_alive"] is False
    assert all(a["node_id"] == r["node_b"] for a in r["after"]), r["after"]  # restarted on node B
    assert sum(r["acked"].values()) == 120  # every event was acknowledged, after retries if need be
    assert r["versions"] == r["acked"], r  # and every acknowledged event is in its profile
    assert sum(a["loads"] for a in r["after"]) == len(r["versions"])  # loaded lazily from Redis
    assert len(r["recs"]) == 5
