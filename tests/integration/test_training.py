"""Ray Train smoke: the real ``TorchTrainer`` on 2 workers learns, restores a finished run by its
name, and exports a model that predicts, and serves, like the in-memory one.

What is verified where (the suite trains ``training/configs/smoke.yaml`` for three epochs in all,
one here and two in the local runs; it trained four before):

- here, one ``TorchTrainer`` fit (one epoch, 2 workers) inside the session's Ray: real Ray Train
  (DDP over 2 workers, Ray's checkpoint handed back to ``run``) learns; the training curve and its
  png; re-running the finished run's name makes Ray Train hand its checkpoint back to the loop
  (``RaySession.checkpoint``), which trains nothing more and exports the same model; the exported
  HF folder predicts exactly like the in-memory model; ``load_head`` + ``TextAnalyzer`` with the
  exported branch reproduce the in-memory model's dev predictions; the Serve graph serves the branch
  when configured, beside the default app.
- ``tests/test_local_training.py`` (two ``ecrec train --local`` runs in a Python without Ray):
  resuming a run name to a further epoch (the step count and the curve go on from the checkpoint),
  the last two checkpoints kept, and the exported branch's quality through ``TextAnalyzer``.
  ``train_loop`` is the same code under both sessions (``RaySession``, ``LocalSession``): what a
  resume does to the loop is shown there, that Ray Train hands the loop its checkpoint here.
"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def smoke(data_dir, tmp_path_factory, server):
    """Runs inside the session's Ray (the `server` fixture started it)."""
    from ecrec.learning.finetune_data import FinetuneConfig
    from training.cli import CONFIGS
    from training.finetune import run

    tmp = tmp_path_factory.mktemp("train")
    cfg = FinetuneConfig.from_yaml(CONFIGS / "smoke.yaml", task="sentiment", data_dir=str(data_dir))
    metrics = run(cfg, tmp / "out", tmp / "storage", name="smoke")
    return cfg, metrics, tmp / "out"


@pytest.fixture(scope="module")
def dev_predictions(smoke):
    """The dev texts, labels and the in-memory model's predictions (the exported best branch loaded
    into a ``BranchClassifier``, as ``export`` scores it)."""
    from ecrec.text.classifier import BranchClassifier, load_branch
    from ecrec.learning.finetune_data import load_task
    from training.finetune import _base_model, predict

    cfg, _, out = smoke
    data = load_task(cfg)
    tok, base = _base_model(cfg, None)
    in_memory = BranchClassifier(base, 3, cfg.branch_layers)
    branch, meta = load_branch(out / "branch.safetensors", base)
    in_memory.branch.load_state_dict(branch.state_dict())
    assert meta["labels"] == data.labels == ["negative", "neutral", "positive"]
    return data.dev, tok, predict(in_memory, tok, data.dev.texts, cfg)


def test_smoke_training_learns(smoke, dev_predictions):
    cfg, metrics, out = smoke
    dev, _, want = dev_predictions
    # chance is 0.4 (the majority class of MARC's 2/1/2 star split); measured 0.675 (81 of 120)
    assert metrics["dev"]["accuracy"] >= 0.62, metrics["dev"]
    assert metrics["dev"]["accuracy"] == pytest.approx(float(np.mean(want == dev.labels)))
    assert metrics["config"]["workers"] == 2 and metrics["epochs_run"] == 1
    assert metrics["last_epoch"]["samples_per_s"] > 0
    # the training curve: a running loss every 10 steps, one dev point at the epoch's last step
    epochs = [r for r in metrics["curve"] if "epoch" in r]
    assert [(r["epoch"], r["step"]) for r in epochs] == [(1, metrics["steps"])]
    assert 0.3 < epochs[0]["dev_macro_f1"] <= 1
    losses = [r["train_loss"] for r in metrics["curve"] if "epoch" not in r]
    assert len(losses) >= 2 and all(np.isfinite(losses))
    assert (out / "training_curve.png").stat().st_size > 10_000


def test_rerunning_the_finished_run_restores_it_and_trains_nothing(smoke):
    """Ray Train restores a run by its name and storage: the loop gets the last checkpoint
    (``RaySession.checkpoint``), finds its one epoch done, trains nothing and reports nothing, and
    ``run`` exports the restored checkpoint. Had the loop not been handed it, it would have trained
    the epoch again and Ray would keep a second checkpoint."""
    from training.finetune import run

    cfg, metrics, out = smoke
    run_dir = out.parent / "storage" / "smoke"
    checkpoints = lambda: sorted(p.name for p in run_dir.glob("checkpoint_*") if p.is_dir())  # noqa: E731
    kept = checkpoints()
    assert len(kept) == 1, kept
    again = run(cfg, out.parent / "rerun", out.parent / "storage", name="smoke")
    assert checkpoints() == kept
    assert (again["epochs_run"], again["steps"], again["curve"]) == (1, metrics["steps"], metrics["curve"])
    assert again["last_epoch"] == metrics["last_epoch"] and again["dev"] == metrics["dev"]


def test_exported_folder_predicts_like_the_in_memory_model(smoke, dev_predictions):
    from ecrec.text.classifier import HFFolderClassifier
    from training.finetune import predict

    cfg, _, out = smoke
    dev, tok, want = dev_predictions
    got = predict(HFFolderClassifier(out / "model"), tok, dev.texts, cfg)
    np.testing.assert_array_equal(got, want)
    for name in ("metrics.json", "classification_report.txt", "confusion_dev.png"):
        assert (out / name).exists(), name


def test_serving_uses_the_fine_tuned_branch(smoke, dev_predictions):
    """``load_head`` + ``TextAnalyzer`` (the Encoder deployment's path, the serving encoder's
    defaults) label the dev texts like the in-memory model; they differ only on the texts that
    serving's longer ``max_length`` (128 tokens, training 48) reads further."""
    from ecrec.text.encoder import EncoderConfig, TextEncoder
    from ecrec.text.sentiment import BranchHead, TextAnalyzer, load_head

    _, _, out = smoke
    dev, _, want = dev_predictions
    enc = TextEncoder(EncoderConfig())
    head = load_head(out / "branch.safetensors", enc)
    assert isinstance(head, BranchHead) and head.info["name"].startswith("sentiment-ft")
    an = TextAnalyzer(enc, head)
    got = np.array([head.labels.index(s.label) for s in an.sentiment(dev.texts)])
    agree, acc = float(np.mean(got == want)), float(np.mean(got == dev.labels))
    # measured: 118 of 120 labels agree (all 120 at the training max_length), accuracy 0.692
    assert agree >= 0.95 and acc >= 0.62, (agree, acc)
    a = an.analyze(["这款手机拍照效果很好，但电池续航不太理想"])[0]
    assert len(a.clauses) == 2 and abs(sum(a.sentiment.probs.values()) - 1) < 1e-5
    # the retrieval vector is the plain encoder's, whatever the head
    plain = enc.encode([a.text], "query")[0]
    assert float(plain @ a.vector) > 0.9999


def test_graph_serves_the_fine_tuned_branch_when_configured(smoke, server, tmp_path):
    """A second app in the same cluster, configured with the smoke run's branch."""
    import httpx
    from ray import serve

    from deployments.app import build_app

    _, _, out = smoke
    client, args = server
    ft_args = args.model_copy(update={"sentiment_head": str(out / "branch.safetensors"),
                                      "intent_head": "none", "namespace": args.namespace + "-ft",
                                      "state_dir": str(tmp_path / "state")})
    serve.run(build_app(ft_args), name="ecrec-ft", route_prefix="/ft")
    try:
        with httpx.Client(base_url=client.base_url, timeout=60, headers=client.headers) as c:
            ready = c.get("/ft/readyz").json()
            assert ready["ready"] and "sentiment-ft" in ready["model"], ready
            r = c.post("/ft/v1/sentiment", json={"texts": ["质量太差了，退货！", "Love it, works perfectly"]}).json()
            assert "sentiment-ft" in r["model"]
            assert all(abs(sum(x["sentiment"]["probs"].values()) - 1) < 1e-4 for x in r["results"])
            assert all(x["intent"] is None for x in r["results"]) and ready["intent_model"] is None
            no = c.post("/ft/v1/intent", json={"texts": ["I forgot my password"]})
            assert no.status_code == 404 and "intent_head=none" in no.json()["detail"], no.text
            # the default app still serves the shipped branch, not the smoke run's
            assert client.get("/readyz").json()["model"] != ready["model"]
    finally:
        serve.delete("ecrec-ft")
