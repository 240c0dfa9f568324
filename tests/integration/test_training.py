"""Ray Train smoke: the real TorchTrainer on 2 workers learns, resumes, and exports a loadable model."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def smoke(data_dir, tmp_path_factory, server):
    """Runs inside the session's Ray (the `server` fixture started it)."""
    from ecrec.training.finetune_data import FinetuneConfig
    from training.cli import CONFIGS
    from training.finetune import run

    tmp = tmp_path_factory.mktemp("train")
    cfg = FinetuneConfig.from_yaml(CONFIGS / "smoke.yaml", task="sentiment", data_dir=str(data_dir))
    first = run(cfg, tmp / "out1", tmp / "storage", name="smoke")
    second = run(dataclasses.replace(cfg, epochs=2), tmp / "out2", tmp / "storage", name="smoke")
    return cfg, first, second, tmp


def test_smoke_training_learns(smoke):
    cfg, first, _, _ = smoke
    # chance is 0.4 (the majority class of MARC's 2/1/2 star split)
    assert first["dev"]["accuracy"] >= 0.55, first["dev"]
    assert first["last_epoch"]["samples_per_s"] > 0 and first["epochs_run"] == 1


def test_resume_continues_the_step_count(smoke):
    _, first, second, tmp = smoke
    assert second["epochs_run"] == 2
    assert second["steps"] == 2 * first["steps"]
    # the training curve goes on across the resume: one dev point per epoch, at each epoch's last step
    epochs = [r for r in second["curve"] if "epoch" in r]
    assert [(r["epoch"], r["step"]) for r in epochs] == [(1, first["steps"]), (2, second["steps"])]
    assert epochs[0] == first["curve"][-1] and 0.3 < epochs[0]["dev_macro_f1"] <= 1  # carried over the resume
    losses = [r["train_loss"] for r in second["curve"] if "epoch" not in r]
    assert len(losses) >= 2 and all(np.isfinite(losses))
    assert (tmp / "out2" / "training_curve.png").stat().st_size > 10_000


def test_exported_folder_predicts_like_the_in_memory_model(smoke):
    from ecrec.text.classifier import BranchClassifier, HFFolderClassifier, load_branch
    from ecrec.training.finetune_data import load_task
    from training.finetune import _base_model, predict

    cfg, _, _, tmp = smoke
    out = tmp / "out2"
    data = load_task(cfg)
    tok, base = _base_model(cfg, None)
    in_memory = BranchClassifier(base, 3, cfg.branch_layers)
    branch, meta = load_branch(out / "branch.safetensors", base)
    in_memory.branch.load_state_dict(branch.state_dict())
    texts = data.dev.texts[:60]
    want = predict(in_memory, tok, texts, cfg)
    got = predict(HFFolderClassifier(out / "model"), tok, texts, cfg)
    np.testing.assert_array_equal(got, want)
    assert meta["labels"] == ["negative", "neutral", "positive"]
    for name in ("metrics.json", "classification_report.txt", "confusion_dev.png"):
        assert (out / name).exists(), name


def test_serving_uses_the_fine_tuned_branch(smoke):
    from ecrec.text.encoder import EncoderConfig, TextEncoder
    from ecrec.text.sentiment import BranchHead, TextAnalyzer, load_head

    _, _, _, tmp = smoke
    enc = TextEncoder(EncoderConfig())
    head = load_head(tmp / "out2" / "branch.safetensors", enc)
    assert isinstance(head, BranchHead) and head.info["name"].startswith("sentiment-ft")
    an = TextAnalyzer(enc, head)
    a = an.analyze(["这款手机拍照效果很好，但电池续航不太理想"])[0]
    assert len(a.clauses) == 2 and abs(sum(a.sentiment.probs.values()) - 1) < 1e-5
    # the retrieval vector is the plain encoder's, whatever the head
    plain = enc.encode([a.text], "query")[0]
    assert float(plain @ a.vector) > 0.9999
    with torch.no_grad():
        assert an.sentiment(["Terrible, broke in a day."])[0].probs["negative"] > 0


def test_graph_serves_the_fine_tuned_branch_when_configured(smoke, server, tmp_path):
    """A second app in the same cluster, configured with the smoke run's branch."""
    import httpx
    from ray import serve

    from deployments.app import build_app

    _, _, _, tmp = smoke
    client, args = server
    ft_args = args.model_copy(update={"sentiment_head": str(tmp / "out2" / "branch.safetensors"),
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
