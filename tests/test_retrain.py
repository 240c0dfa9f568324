"""Retraining's data and decision: labelled reviews out of the event store, promotion only if not worse."""
from pathlib import Path

import numpy as np
import pytest

from ecrec.profiles.events import Event
from ecrec.operations.retrain_policy import labelled_reviews, should_promote
from ecrec.text.sentiment import Clause, Sentiment, TextAnalysis
from ecrec.profiles.shard import ProfileShard
from ecrec.profiles.store import SQLiteStore

DIM = 8


def _analysis(text):
    s = Sentiment("neutral", {"positive": 0.3, "neutral": 0.4, "negative": 0.3})
    v = np.eye(DIM, dtype=np.float32)[0]
    return TextAnalysis(text, "zh", False, s, v, [Clause(text, s, v)])


def test_labelled_reviews_come_out_of_the_store(tmp_path):
    stores = [SQLiteStore(tmp_path / f"s{i}.db") for i in range(2)]
    shards = [ProfileShard(s, DIM, snapshot_every=3) for s in stores]
    v = np.eye(DIM, dtype=np.float32)
    rows = [("u1", "质量很好", 5), ("u1", "一般般", 3), ("u2", "太差了", 1), ("u3", "还行", None)]
    for j, (user, text, rating) in enumerate(rows):
        shard = shards[0 if user in ("u1", "u3") else 1]  # a user lives on one shard
        shard.apply(Event(user_id=user, type="review", text=text, rating=rating, item_id="p1", ts=100.0 + j,
                          event_id=f"r{j}"), v[1], _analysis(text))
        shard.apply(Event(user_id=user, type="click", item_id="p2", ts=200.0 + j, event_id=f"c{j}"), v[2], None)
    got = sorted((r["user_id"], r["text"], r["label"], r["rating"]) for r in labelled_reviews(stores))
    assert got == [("u1", "一般般", "neutral", 3), ("u1", "质量很好", "positive", 5), ("u2", "太差了", "negative", 1)]
    assert [r["text"] for r in labelled_reviews(stores, since=101.5)] == ["太差了"]
    shards[0].delete("u1")  # erased users leave the training data too
    assert [r["text"] for r in labelled_reviews(stores)] == ["太差了"]


def test_promotion_rule():
    serving = {"marc_zh": {"accuracy": 0.69, "macro_f1": 0.62}, "marc_en": {"accuracy": 0.73, "macro_f1": 0.68}}
    better = {"marc_zh": {"accuracy": 0.70, "macro_f1": 0.62}, "marc_en": {"accuracy": 0.73, "macro_f1": 0.69}}
    ok, why = should_promote(better, serving)
    assert ok and "marc_zh" in why
    worse = {"marc_zh": {"accuracy": 0.72, "macro_f1": 0.60}, "marc_en": {"accuracy": 0.75, "macro_f1": 0.70}}
    ok, why = should_promote(worse, serving)
    assert not ok and "marc_zh macro_f1 0.6000 < 0.6200" in why
    assert should_promote(worse, serving, tolerance=0.03)[0]
    assert not should_promote({"marc_zh": better["marc_zh"]}, serving)[0]  # a set it was not evaluated on


def test_labelled_files_name_the_bad_line(tmp_path, data_dir):
    """``read_labelled`` for both tasks: labels become the task's class ids; an unknown label or a
    line that is not JSON is refused with its line number, before any training starts."""
    from ecrec.learning.finetune_data import read_labelled
    from ecrec.learning.intent_data import intent_labels

    intents = intent_labels(str(data_dir))
    assert len(intents) == 28 and intents[-1] == "none" and "cancel_order" in intents
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "取消订单", "label": "cancel_order"}\n\n{"text": "随便看看", "label": "none"}\n')
    texts, y = read_labelled(f, intents)
    assert texts == ["取消订单", "随便看看"] and list(y) == [intents.index("cancel_order"), 27]
    f.write_text('{"text": "ok", "label": "positive"}\n')
    assert list(read_labelled(f)[1]) == [2]  # sentiment by default
    with pytest.raises(ValueError, match=r"t.jsonl:1: needs a text and a label"):
        read_labelled(f, intents)  # "positive" is no intent
    f.write_text('{"text": "ok", "label": "positive"}\nnot json\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: not JSON"):
        read_labelled(f)


def test_click_sequences_are_what_the_retriever_reads_and_split_leave_last_out(tmp_path):
    """The export is each profile's recent positive items (a re-click moves an item to the end, a
    view is not a click, a dislike takes it out), items outside the catalog dropped, shoppers
    with fewer than 3 left out; as RecBole files it reads back leave-last-out."""
    from ecrec.retrieval.catalog import Item
    from ecrec.evaluation.data import load_dataset
    from ecrec.operations.retrain_policy import click_sequences, write_recbole

    stores = [SQLiteStore(tmp_path / f"s{i}.db") for i in range(2)]
    shards = [ProfileShard(s, DIM, snapshot_every=2) for s in stores]  # snapshots + logs both read
    v = np.eye(DIM, dtype=np.float32)
    walks = {"u1": [("click", "a"), ("click", "b"), ("view", "c"), ("cart", "d"), ("click", "b"), ("purchase", "e")],
             "u2": [("click", "c"), ("click", "gone"), ("click", "a"), ("dislike", "c"), ("click", "d"), ("click", "e")],
             "u3": [("click", "a"), ("click", "b")]}
    n = 0
    for user, walk in walks.items():
        for kind, item in walk:
            n += 1
            shards[user == "u2"].apply(Event(user_id=user, type=kind, item_id=item, ts=1e9 + n, event_id=f"e{n}"),
                                       v[n % DIM], None)
    catalog = [Item(id=i, title=f"title {i}", description="", category=["x", "y z"]) for i in "abcde"]
    before = [[store.load_user(u) for u in walks] for store in stores]
    got = dict(click_sequences(stores, {it.id for it in catalog}, dim=DIM))
    assert got == {"u1": ["a", "d", "b", "e"], "u2": ["a", "d", "e"]}
    # read beside the live shard: nothing written (a snapshot on eviction could bring back an erased user)
    assert [[store.load_user(u) for u in walks] for store in stores] == before
    folder, users = write_recbole(tmp_path / "data", catalog, got.items())
    assert users == 2
    ds = load_dataset(folder, "recbole")
    assert [it.id for it in ds.items] == list("abcde") and ds.items[0].title == "title a"
    idx = {i: n for n, i in enumerate("abcde")}
    test = {u: (h, int(t)) for u, h, t in zip(ds.test.users, ds.test.histories, ds.test.targets)}
    assert test == {"u1": ([idx["a"], idx["d"], idx["b"]], idx["e"]), "u2": ([idx["a"], idx["d"]], idx["e"])}
    assert ds.train_sequences() == [[idx["a"], idx["d"]]]  # u2's three: one to validate, one to test
    with pytest.raises(ValueError, match="whitespace"):  # RecBole's files are tab-separated
        write_recbole(tmp_path / "bad", [Item(id="a\tb", title="t")], [])
    assert sorted(ds.train_sequences(include_valid=True)) == [[idx["a"], idx["d"]], [idx["a"], idx["d"], idx["b"]]]


def _tiny_model(id_items: int, vocab: list[str], seed: int):
    import torch

    from ecrec.retrieval.sequence import SequenceConfig, SequenceModel

    torch.manual_seed(seed)
    m = SequenceModel(SequenceConfig(dim=16, hidden=16, layers=1, heads=2, max_len=8, id_items=id_items))
    with torch.no_grad():  # weights away from their identity/zero start, so every term counts
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    m.vocab = {item: row for row, item in enumerate(vocab)}
    return m.eval()


def test_catalog_scores_rank_like_serving_for_a_model_of_another_catalog():
    """Batched holdout scores equal serving's one-at-a-time ``query`` + ``item_scores``, for a model
    whose id vocabulary covers part of the catalog in another order."""
    from ecrec.retrieval.sequence import catalog_scores

    rng = np.random.default_rng(0)
    catalog = [f"i{j}" for j in range(9)]
    X = rng.normal(size=(9, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    model = _tiny_model(6, ["i7", "zz", "i2", "i0", "i5", "i3"], seed=1)
    histories = [[0], [3, 1, 7], [8, 2, 5, 4, 6], [1, 1, 2]]
    got = catalog_scores(model, X, catalog, histories, batch=3)
    for h, row in zip(histories, got):
        names = [catalog[j] for j in h]
        want = model.item_scores(model.query(X[h], names), X, catalog)
        np.testing.assert_allclose(row, want, rtol=1e-4, atol=1e-5)
    assert np.ptp(got[:, 7]) > 1e-3  # a known item's id row moves its score across histories


def test_warm_state_keeps_the_serving_weights_and_the_id_rows_it_knows():
    import torch

    from ecrec.retrieval.sequence import warm_state

    serving = _tiny_model(4, ["a", "b", "c", "d"], seed=2)
    fresh = _tiny_model(3, [], seed=3)
    state = warm_state(fresh, serving, ["c", "new", "a"])
    src, init = serving.state_dict(), fresh.state_dict()
    for k, v in state.items():
        if k != "ids.weight":
            assert torch.equal(v, src[k]), k
    assert torch.equal(state["ids.weight"][0], src["ids.weight"][2])
    assert torch.equal(state["ids.weight"][2], src["ids.weight"][0])
    assert torch.equal(state["ids.weight"][1], init["ids.weight"][1])  # an item the serving model never saw


def test_sequence_version_names_what_serves():
    from ecrec.operations.retrain_policy import sequence_version

    assert sequence_version(None) == ""
    assert sequence_version("none") == "none"
    assert sequence_version("/h/sequence/sequence-retrain-x.safetensors") == "sequence-retrain-x"


def test_sequence_settings_are_typed_and_checked():
    """``--set lr=3e-3`` is a float (YAML alone reads it as a string, and training then failed)."""
    pytest.importorskip("ray")
    from ecrec.learning.sequence_training import SequenceTrainConfig
    from training.cli import _settings
    from training.sequence import typed_settings

    got = typed_settings(SequenceTrainConfig, _settings(["lr=3e-3", "epochs=20", "include_valid=true"]))
    assert got == {"lr": 0.003, "epochs": 20, "include_valid": True} and isinstance(got["lr"], float)
    with pytest.raises(SystemExit, match="not a setting"):
        typed_settings(SequenceTrainConfig, {"learning_rate": 0.1})
    with pytest.raises(SystemExit, match="needs a int"):
        typed_settings(SequenceTrainConfig, {"epochs": "many"})


def test_training_joins_the_cluster_of_a_ray_job():
    """Inside a Ray Job (RAY_ADDRESS set) ``ray.init`` refuses resource arguments: the driver joins
    the cluster with none (``retrain --submit`` failed there); here it starts a local Ray."""
    from training.cluster import init_kwargs

    assert init_kwargs(4, 1 << 28, env={"RAY_ADDRESS": "127.0.0.1:6379"}) == {}
    local = init_kwargs(4, 1 << 28, env={})
    assert local["num_cpus"] == 4 and local["_node_ip_address"] == "127.0.0.1" and not local["include_dashboard"]


def test_training_says_what_the_cluster_lacks():
    """Ray Train waits until every worker fits, which on a local Ray without them is forever (the
    GPUs of gpu-cluster.yaml on a CPU machine): what is missing is said, in numbers."""
    from training.cluster import shortfall

    assert shortfall(2, 1, 0, {"CPU": 2.0}) is None
    assert shortfall(2, 0.25, 0, {"CPU": 0.5}) is None  # the smoke config beside a Serve app
    assert shortfall(4, 2, 1, {"CPU": 2.0}) == "8 CPU (4 workers x 2), 2 there; 4 GPU (4 workers x 1), 0 there"
    assert shortfall(2, 1, 1, {"CPU": 16.0, "GPU": 1.0}) == "2 GPU (2 workers x 1), 1 there"


def test_retrain_sequence_refuses_what_it_cannot_do_well(tmp_path):
    """An earlier run's folder (its checkpoint would resume on other data) and a serve config that
    turns the retriever off are refused before anything is read or trained."""
    import yaml

    from ecrec.cli import main

    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml.safe_dump({"applications": [{"args": {"sequence_model": "none"}}]}))
    with pytest.raises(SystemExit, match="sequence_model: none"):
        main(["retrain", "sequence", "--serve-config", str(cfg), "--out", str(tmp_path / "run")])
    (tmp_path / "old" / "data").mkdir(parents=True)
    with pytest.raises(SystemExit, match="earlier retrain"):
        main(["retrain", "sequence", "--serve-config", str(cfg), "--out", str(tmp_path / "old")])
    with pytest.raises(SystemExit, match="at least 1"):
        main(["retrain", "sequence", "--min-users", "0", "--out", str(tmp_path / "x")])


def test_since_days_is_refused_where_it_cannot_apply(tmp_path):
    """``--since-days`` used to be ignored by ``retrain sequence`` and ``retrain intent``: they
    trained on everything while the operator asked for the last days. Refused before anything runs."""
    from ecrec.cli import main

    for task in ("sequence", "intent"):
        with pytest.raises(SystemExit, match=f"--since-days is for sentiment.*{task}"):
            main(["retrain", task, "--since-days", "7", "--out", str(tmp_path / task)])
        assert not (tmp_path / task).exists()


def test_the_export_writes_nothing_even_for_a_corrupt_snapshot(tmp_path):
    """Regression: the export loaded profiles through the live path, which drops a corrupt snapshot
    from the store (and snapshots what it evicts): a read beside the live shard wrote into it."""
    import sqlite3

    from ecrec.operations.retrain_policy import click_sequences

    path = tmp_path / "s.db"
    live = ProfileShard(SQLiteStore(path), DIM, snapshot_every=3)
    v = np.eye(DIM, dtype=np.float32)
    for n, item in enumerate("abcdefg"):
        live.apply(Event(user_id="u", type="click", item_id=item, ts=1e9 + n, event_id=f"e{n}"), v[n], None)
    db = sqlite3.connect(path)
    (seq, blob), = db.execute("SELECT seq, blob FROM profile_snapshots ORDER BY seq DESC LIMIT 1").fetchall()
    bad = bytearray(blob)
    bad[-7] ^= 0xFF
    db.execute("UPDATE profile_snapshots SET blob = ? WHERE seq = ?", (bytes(bad), seq))
    db.commit()
    rows = db.execute("SELECT seq, blob FROM profile_snapshots ORDER BY seq").fetchall()
    got = dict(click_sequences([SQLiteStore(path)], set("abcdefg"), dim=DIM))
    assert got == {"u": list("abcdefg")}  # from the older snapshot and the log
    assert db.execute("SELECT seq, blob FROM profile_snapshots ORDER BY seq").fetchall() == rows


def test_a_retrain_continues_the_serving_head_only_when_it_has_the_configs_layers(data_dir):
    """``retrain sentiment|intent`` starts the candidate from the serving branch when that branch has
    the K the config trains (the shipped intent branch: K=2), else from the trunk's own layers, and
    says which in decision.json; the loop refuses a start branch of other labels or another K."""
    import dataclasses

    import torch
    from safetensors.torch import load_file

    from ecrec.learning.finetune_data import FinetuneConfig
    from ecrec.learning.intent_data import intent_labels
    from training.finetune import _base_model, start_branch
    from ecrec.operations.retrain_policy import start_from as _start_from

    artifacts = Path(__file__).resolve().parents[1] / "ecrec" / "artifacts"
    shipped = artifacts / "intent_branch_e5-small.safetensors"
    labels = intent_labels(str(data_dir))
    assert _start_from(shipped, 2, labels, False) == (
        str(shipped), "from the serving head intent_branch_e5-small.safetensors")
    assert _start_from(shipped, 1, labels, False) == (
        None, "from the trunk's own layers (the serving head has K=2, the config trains K=1)")
    assert _start_from(shipped, 2, ["negative", "neutral", "positive"], False) == (
        None, "from the trunk's own layers (the serving head's labels are not the task's)")
    # the linear probe (sentiment_head: probe) is no branch to continue: from scratch, not a crash
    assert _start_from(artifacts / "sentiment_probe_e5-small.npz", 1, ["negative", "neutral", "positive"], False) == (
        None, "from the trunk's own layers (the serving head sentiment_probe_e5-small.npz is not a fine-tuned branch)")
    assert _start_from(shipped, 2, labels, True)[0] is None and _start_from(None, 2, labels, False)[0] is None
    # a relative path (as a serve config may name it) is handed to the workers absolute
    import os

    cwd = os.getcwd()
    try:
        os.chdir(artifacts)
        assert _start_from(Path("intent_branch_e5-small.safetensors"), 2, labels, False)[0] == str(shipped)
    finally:
        os.chdir(cwd)

    cfg = FinetuneConfig(task="intent", branch_layers=2, init_branch=str(shipped))
    _, base = _base_model(cfg, None)
    state = start_branch(cfg, base, labels)
    saved = load_file(str(shipped))
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k].float()) for k in saved)
    with pytest.raises(ValueError, match="K=2 do not match the task's .* K=3"):
        start_branch(dataclasses.replace(cfg, branch_layers=3), base, labels)
    with pytest.raises(ValueError, match="do not match"):
        start_branch(cfg, base, ["negative", "neutral", "positive"])
