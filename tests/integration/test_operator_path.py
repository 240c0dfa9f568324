"""The operator's path, as the README and the runbook write it: ``ray start --head`` (token auth,
dashboard on 127.0.0.1), ``serve deploy`` of the shipped ``deployments/serve_config.yaml``,
``/readyz``; an update of the config; a bad update, which Serve refuses while the running version
keeps serving; a rollback. Only the HTTP port and the state and index folders of the shipped
config are changed (to free ports and a temporary folder); every other setting is as shipped.

The cluster is a Ray of its own, started with the ``ray`` CLI in a process group of its own, from
the repository root (the shipped config's catalog path is relative to it), and stopped at the end
by signalling that group: ``ray start``, the GCS, the raylet and the dashboard; workers exit when
their raylet goes (never ``ray stop``, which would stop every Ray on the machine).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.disruptive]  # a second Ray on the same two cores
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.sys.executable).parent
KEY = "operator-path-key-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout_s: float = 300.0, every_s: float = 1.0):
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.TransportError, subprocess.SubprocessError) as e:
            last = e
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


@pytest.fixture
def cluster(tmp_path):
    """A one-node Ray cluster started as an operator would (``ray start --head``), with its
    dashboard on 127.0.0.1 for ``serve deploy``. Yields (env, dashboard address)."""
    temp = Path(tempfile.mkdtemp(prefix="ecrec-op-", dir="/tmp"))  # short: Ray's socket paths
    dash = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "ECREC_API_KEYS")}
    env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", ECREC_API_KEY=KEY, PYTHONPATH=str(ROOT))
    subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    head = subprocess.Popen(
        [BIN / "ray", "start", "--head", "--block", f"--port={_free_port()}", "--num-cpus=2",
         "--object-store-memory=400000000", "--node-ip-address=127.0.0.1", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={_free_port()}",
         f"--metrics-export-port={_free_port()}", f"--ray-client-server-port={_free_port()}", f"--temp-dir={temp}"],
        cwd=ROOT, env=env, stdout=open(tmp_path / "ray-start.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait("the dashboard", lambda: _serve(env, address, "status").returncode == 0, timeout_s=120, every_s=2)
        yield env, address
    finally:
        # the whole cluster, Serve's replicas included, is the head's process group: no `serve
        # shutdown` first (it cost ~15 s of the teardown's 35), and a short grace before SIGKILL
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=10)  # then SIGKILL whatever of the group is left
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(temp, ignore_errors=True)


def _serve(env: dict, address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "serve", *args, "--address", address], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def _app_status(env: dict, address: str) -> dict:
    """The app's entry of ``serve status`` ({} when the dashboard did not answer this time)."""
    out = _serve(env, address, "status")
    if out.returncode != 0:
        return {}
    return ((yaml.safe_load(out.stdout) or {}).get("applications") or {}).get("ecrec") or {}


def test_shipped_config_deploys_updates_refuses_a_bad_update_and_rolls_back(cluster, tmp_path):
    env, address = cluster
    port = _free_port()
    shipped = yaml.safe_load((ROOT / "deployments" / "serve_config.yaml").read_text())
    shipped["http_options"]["port"] = port
    shipped["applications"][0]["args"].update(index_dir=str(tmp_path / "index"), state_dir=str(tmp_path / "state"))

    def deploy(name: str, config: dict) -> None:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        out = _serve(env, address, "deploy", str(path))
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    def encoder_config(config: dict, **changes) -> dict:
        new = yaml.safe_load(yaml.safe_dump(config))
        [enc] = [d for d in new["applications"][0]["deployments"] if d["name"] == "Encoder"]
        enc["user_config"].update(changes)
        return new

    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers={"Authorization": f"Bearer {KEY}"})

    def ready_model(want: str):
        def check():
            r = http.get("/readyz")
            return r.status_code == 200 and want in r.json()["model"] and r.json()
        return check

    # 1. the shipped config, as shipped: it builds the index and serves
    deploy("shipped", shipped)
    first = _wait("/readyz after the first deploy", ready_model("sentiment-ft"), timeout_s=420, every_s=2)
    assert first["shards"] == 2 and first["items"] > 300, first
    _wait("the app RUNNING after the first deploy", lambda: _app_status(env, address).get("status") == "RUNNING",
          timeout_s=120)
    r = http.post("/v1/events", json={"user_id": "operator-user", "type": "review", "item_id": "phones-001",
                                      "text": "拍照非常清晰，很满意", "rating": 5, "event_id": "op-1"})
    assert r.status_code == 200 and r.json()["applied"], r.text
    assert http.post("/v1/events", json={"user_id": "operator-user", "type": "click",
                                         "item_id": "phones-001"}, headers={"Authorization": ""}).status_code == 401

    # 2. an update: the Encoder's user_config names another head; the running replicas switch
    deploy("probe", encoder_config(shipped, sentiment_head="probe"))
    probe = _wait("/readyz after the update", ready_model("sentiment_probe"), timeout_s=180)
    assert probe["model_version"].startswith(probe["model"] + "@")
    _wait("the app RUNNING after the update", lambda: _app_status(env, address).get("status") == "RUNNING",
          timeout_s=60)

    # 3. a bad update (another shard count over the same state): refused, the last version serves on
    bad = yaml.safe_load(yaml.safe_dump(shipped))
    bad["applications"][0]["args"]["num_shards"] = 4
    deploy("bad", bad)
    failed = _wait("DEPLOY_FAILED for num_shards 4",
                   lambda: (s := _app_status(env, address)).get("status") == "DEPLOY_FAILED" and s, timeout_s=300,
                   every_s=2)
    assert "num_shards" in failed.get("message", ""), failed
    still = http.get("/readyz").json()
    assert still["ready"] and "sentiment_probe" in still["model"] and still["shards"] == 2, still

    # 4. the rollback: the shipped config again; the profile written at step 1 is there
    deploy("rollback", shipped)
    _wait("/readyz after the rollback", ready_model("sentiment-ft"), timeout_s=300)
    _wait("the app RUNNING after the rollback", lambda: _app_status(env, address).get("status") == "RUNNING",
          timeout_s=120)
    recs = http.get("/v1/users/operator-user/recommendations", params={"k": 5})
    assert recs.status_code == 200 and not recs.json()["cold_start"], recs.text
    assert http.post("/v1/events", json={"user_id": "operator-user", "type": "review", "item_id": "phones-001",
                                         "text": "拍照非常清晰，很满意", "rating": 5,
                                         "event_id": "op-1"}).json()["applied"] is False  # same event, once
