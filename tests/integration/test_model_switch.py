"""A retrained head rolls out without dropping a request, and the version at /readyz follows: when
only the encoder's user_config changes (a serve config's Encoder user_config) Serve reconfigures
the running replicas in place; when the app's args change, it replaces them (new before old)."""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.disruptive]


def _switch(client, args, want: str | tuple[str, ...], deadline_s: float = 120, user_config: dict | None = None,
            gone: str | None = None) -> None:
    """Deploy, then wait until /readyz's model version names ``want`` (each of them, for a tuple) and
    no longer ``gone``. One deploy (one graph rollout) per call: each costs seconds of the suite."""
    from ray import serve

    from deployments.app import build_graph

    wants = (want,) if isinstance(want, str) else want
    serve.run(build_graph(args, user_config), name="ecrec", route_prefix="/")
    deadline = time.time() + deadline_s
    while (not all(w in (model := client.get("/readyz").json().get("model_version", "")) for w in wants)
           or (gone and gone in model)):
        assert time.time() < deadline, f"/readyz never showed {wants}" + (f" without {gone}" if gone else "")
        time.sleep(0.2)


def test_heads_switch_in_place_without_dropping_a_request(server, metrics_text):
    client, args = server
    before = client.get("/readyz").json()
    assert "sentiment-ft" in before["model"], before
    statuses, models, stop = [], set(), threading.Event()

    def hammer():
        with httpx.Client(base_url=str(client.base_url), headers=dict(client.headers), timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v1/sentiment", json={"texts": ["质量太差了，再也不买了"]})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    models.add(r.json()["model"])

    # a chat before the switch (the ingress once cached "intents are served" here, then answered 500)
    asked = client.post("/v1/chat", json={"user_id": "chat-noint", "message": "我的快递到哪了？"}).json()
    assert asked["route"] == "slot", asked
    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        _switch(client, args, "sentiment_probe", user_config={"sentiment_head": "probe", "intent_head": "none"})
        time.sleep(1.0)  # requests keep flowing on the new head
    finally:
        stop.set()
        for t in threads:
            t.join()
    after = client.get("/readyz").json()
    assert after["model"] != before["model"] and "probe" in after["model"]
    assert len(statuses) > 20 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert any("sentiment-ft" in m for m in models) and any("probe" in m for m in models), models
    r = client.post("/v1/sentiment", json={"texts": ["质量太差了，再也不买了"]}).json()
    assert r["results"][0]["sentiment"]["label"] == "negative"  # the probe serves, and serves sense
    assert r["model"] == after["model"] and after["model_version"].startswith(after["model"] + "@")
    assert after["intent_model"] is None, after
    # chat goes on without intents: the pending question is completed, product questions answered
    r = client.post("/v1/chat", json={"user_id": "chat-noint", "session_id": asked["session_id"],
                                      "message": "订单号是 2023110588812"})
    assert r.status_code == 200 and "intent" not in r.json(), r.text
    assert r.json()["actions"] == [{"type": "track_order", "order_id": "2023110588812"}], r.text
    r = client.post("/v1/chat", json={"user_id": "chat-noint-2", "message": "有没有适合拍照的手机？"})
    assert r.status_code == 200 and r.json()["route"] == "product", r.text
    assert client.post("/v1/intent", json={"texts": ["hi"]}).status_code == 404
    samples = metrics_text("ecrec_sentiment", f'model_version="{after["model_version"]}"')
    assert any(f'model_version="{after["model_version"]}"' in ln for ln in samples)  # metrics follow the switch
    _switch(client, args, "sentiment-ft")  # back to the shipped heads for the tests after this one
    ready = client.get("/readyz").json()
    assert ready["model"] == before["model"] and ready["intent_model"] == before["intent_model"], ready


def test_retrain_sentiment_keeps_the_serving_head_when_the_candidate_is_worse(server, data_dir, tmp_path):
    """`ecrec retrain sentiment` end to end on a small budget, under the real promotion rule (the
    default tolerance, 0): the store's rated reviews are exported and trained on (Ray Train, the
    smoke settings), both heads are scored on the same holdout, and the smoke-budget candidate,
    which has learned (above MARC's 0.4 majority class) but is worse than the shipped head, is
    not promoted: no head is copied, no serve config is written, nothing rolls out. (A promoted
    head's in-place rollout: the intent retrain below.)"""
    import json

    import numpy as np

    from ecrec.cli import main
    from ecrec.profiles.events import Event
    from ecrec.text.sentiment import Clause, Sentiment, TextAnalysis
    from ecrec.profiles.shard import ProfileShard
    from ecrec.profiles.store import SQLiteStore

    client, args = server
    before = client.get("/readyz").json()
    state = tmp_path / "state"
    state.mkdir()
    shard = ProfileShard(SQLiteStore(state / "profiles-0000.db"), 8)
    s = Sentiment("neutral", {"positive": 0.3, "neutral": 0.4, "negative": 0.3})
    v = np.eye(8, dtype=np.float32)[0]
    reviews = [("质量很好，很满意", 5), ("太差了，不推荐", 1), ("一般般吧", 3), ("Works great", 4)] * 5
    for j, (text, stars) in enumerate(reviews):
        shard.apply(Event(user_id=f"u{j % 4}", type="review", text=text, rating=stars, ts=1e9 + j, event_id=f"r{j}"),
                    None, TextAnalysis(text, "zh", False, s, v, [Clause(text, s, v)]))
    out = tmp_path / f"sentrun-{uuid.uuid4().hex[:8]}"  # its own name: a promoted head would be heads/sentiment-<name>
    main(["retrain", "sentiment", "--state-dir", str(state), "--config", "training/configs/smoke.yaml",
          "--set", "train_limit=200", "--data", str(data_dir), "--holdout", "60", "--out", str(out)])
    decision = json.loads((out / "decision.json").read_text())
    assert decision["exported"] == 20
    assert sum(1 for _ in open(out / "labelled.jsonl")) == 20
    h = decision["holdout"]
    assert set(h["serving"]) == set(h["candidate"]) == {"marc_zh", "marc_en"}
    # the shipped head on the fixed slice (measured: accuracy 0.667 zh, 0.767 en)
    assert h["serving"]["marc_zh"]["accuracy"] >= 0.62 and h["serving"]["marc_en"]["accuracy"] >= 0.72, h
    # the candidate learned (measured: 0.683 en, 0.433 zh; the majority class is 0.4) ...
    assert h["candidate"]["marc_en"]["accuracy"] >= 0.63 and h["candidate"]["marc_zh"]["accuracy"] >= 0.4, h
    # ... but is worse than the serving head (measured macro-F1 zh 0.277 against 0.570): kept out
    assert not decision["promoted"] and decision["why"].startswith("worse than the serving model"), decision
    assert "marc_zh macro_f1" in decision["why"], decision["why"]
    assert "serve_config" not in decision and "version" not in decision and "deployed" not in decision, decision
    assert not (out / "serve_config.yaml").exists()
    assert not (args.home() / "heads" / f"sentiment-{out.name}.safetensors").exists()
    assert client.get("/readyz").json()["model_version"] == before["model_version"]


def test_retrain_intent_on_help_desk_labels_promotes_and_rolls_out(server, data_dir, tmp_path, metrics_text):
    """`ecrec retrain intent --labelled`: utterances a help desk labelled are trained on, continuing
    the serving branch (same K), both
    intent heads are scored on the same held-out intent sets, the candidate is not worse than the
    shipped branch on any of them (the real rule: tolerance 0), and the promoted head swaps in place;
    the intents it gives are sane and the metrics carry its version. A file with an unknown intent
    is refused before any training, naming its line."""
    import json

    import yaml

    from ecrec.cli import main

    client, args = server
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "where is my parcel", "label": "track_order"}\n{"text": "x", "label": "teleport"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: needs a text and a label"):
        main(["retrain", "intent", "--labelled", str(bad), "--data", str(data_dir), "--out", str(tmp_path / "bad")])
    labelled = tmp_path / "tickets.jsonl"
    tickets = [("我的包裹到哪了", "track_order"), ("快递什么时候到", "track_order"), ("我要退款", "get_refund"),
               ("怎么申请退款", "get_refund"), ("帮我取消订单", "cancel_order"), ("订单不要了，取消吧", "cancel_order")]
    labelled.write_text("".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in tickets))
    out = tmp_path / "intentrun"
    # K=2 like the shipped branch: the candidate continues it (from scratch, this budget needed
    # train_limit=1500 and 3,000 MARC reviews, 275 s, to be promoted; train_limit=1000 was a text worse)
    main(["retrain", "intent", "--labelled", str(labelled), "--config", "training/configs/smoke.yaml",
          "--set", "train_limit=300", "--set", "none_marc=300", "--set", "zh_variants=1", "--set", "branch_layers=2",
          "--data", str(data_dir), "--holdout", "20", "--out", str(out)])
    decision = json.loads((out / "decision.json").read_text())
    h = decision["holdout"]
    assert decision["start"] == "from the serving head intent_branch_e5-small.safetensors", decision["start"]
    assert decision["exported"] == 6 and decision["promoted"] and decision["why"].startswith("not worse"), decision
    assert set(h["serving"]) == set(h["candidate"]) >= {"bitext_heldout_groups", "zh_test"}
    # the shipped branch on the fixed slices (measured: accuracy 1.0 held-out groups, 0.95 zh_test) ...
    assert h["serving"]["bitext_heldout_groups"]["accuracy"] >= 0.95 and h["serving"]["zh_test"]["accuracy"] >= 0.9, h
    # ... and the candidate (measured: 1.0 and 0.95; promoted because it is not worse on any set)
    assert h["candidate"]["bitext_heldout_groups"]["accuracy"] >= 0.95 and h["candidate"]["zh_test"]["accuracy"] >= 0.9, h
    encoder = [d for d in yaml.safe_load(open(decision["serve_config"]))["applications"][0]["deployments"]
               if d["name"] == "Encoder"][0]["user_config"]
    promoted = encoder["intent_head"]
    assert promoted.endswith(f"intent-{out.name}.safetensors") and encoder.get("sentiment_head") is None
    try:
        _switch(client, args, out.name, user_config={"intent_head": promoted})
        ready = client.get("/readyz").json()
        assert out.name in ready["intent_model"], ready
        r = client.post("/v1/intent", json={"texts": ["I want to cancel my order"]})
        assert r.status_code == 200 and r.json()["results"][0]["intent"]["label"] == "cancel_order", r.text
        assert any(out.name in ln for ln in metrics_text("ecrec_sentiment", out.name))
    finally:
        _switch(client, args, "intent-ft", gone=out.name)
        Path(promoted).unlink()  # the promoted copy in $ECREC_HOME/heads: nothing serves it now


def test_retrain_sequence_learns_what_shoppers_click_next_and_rolls_out(server, tmp_path):
    """`ecrec retrain sequence` end to end: shoppers whose clicks follow a fixed next-item rule (a
    random permutation of the live catalog, which no text model can know) are exported from their
    store, the serving retriever is fine-tuned on them with Ray Train, both are scored on each
    shopper's last click, the candidate is promoted by the real rule (tolerance 0), and it rolls
    out as new ingress replicas without a failed request. Live shoppers who follow the rule then
    find their next item in their list. The same deploy also changes the app's sentiment_head arg:
    changed args replace the encoder replicas (new before old) without a failed request either."""
    import json

    import numpy as np
    import yaml

    from ecrec.retrieval.artifact import read_artifact
    from ecrec.cli import main
    from ecrec.profiles.events import Event
    from ecrec.profiles.shard import ProfileShard
    from ecrec.profiles.store import SQLiteStore

    client, args = server
    before_model = client.get("/readyz").json()["model"]
    items, index, _ = read_artifact(args.resolved_index_dir())
    ids = [it.id for it in items]
    rng = np.random.default_rng(7)
    nxt = dict(zip(ids, rng.permutation(ids)))
    state = tmp_path / "state"
    state.mkdir()
    shards = [ProfileShard(SQLiteStore(state / f"profiles-000{i}.db"), index.dim, snapshot_every=20) for i in range(2)]
    n = 0
    for u in range(400):
        item = ids[rng.integers(len(ids))]
        for _ in range(rng.integers(5, 10)):
            n += 1
            shards[u % 2].apply(Event(user_id=f"walker-{u}", type="click", item_id=item, ts=1e9 + n,
                                      event_id=f"w{n}"), index.vector(item), None)
            item = nxt[item]
    cfg = tmp_path / "serve_config.yaml"
    cfg.write_text(yaml.safe_dump({"applications": [{"name": "ecrec", "import_path": "deployments.app:build_app",
                                                     "args": args.model_dump(mode="json", exclude_none=True)}]}))
    out = tmp_path / "seqrun"
    main(["retrain", "sequence", "--state-dir", str(state), "--serve-config", str(cfg), "--out", str(out),
          "--set", "epochs=20", "--set", "batch_size=16", "--set", "lr=1e-3", "--set", "patience=20",
          "--set", "time_cap_s=300", "--set", "cpus_per_worker=0.25"])  # shares the session's 2-CPU Ray with the Serve app
    # batch 16: ~400 walks give each of the 2 workers 12 steps an epoch (batch 128 gave 1, and needed 60
    # epochs of ~2 s, mostly Ray Train's per-epoch report); measured valid N@10 0.96 after 20 epochs
    decision = json.loads((out / "decision.json").read_text())
    h = decision["holdout"]
    # a walk caught in a short cycle of the rule has fewer than three distinct items: left out
    assert 390 <= decision["exported"] <= 400 and h["serving"]["last_item"]["n"] == decision["exported"], decision
    # the shipped retriever knows no ids of this catalog: it reads text only, near chance here
    assert h["serving"]["last_item"]["recall10"] < 0.12, h
    assert h["candidate"]["last_item"]["recall10"] > 0.6 and decision["promoted"], h
    promoted = yaml.safe_load(open(decision["serve_config"]))["applications"][0]["args"]["sequence_model"]
    assert promoted.endswith(f"sequence-{out.name}.safetensors")

    def probe(prefix: str, starts: list[str]) -> int:
        """Shoppers who click three steps of the rule: how many find the fourth in their top 10."""
        hits = 0
        for j, s in enumerate(starts):
            user, walk = f"{prefix}-{j}", [s, nxt[s], nxt[nxt[s]]]
            for item in walk:
                assert client.post("/v1/events", json={"user_id": user, "type": "click", "item_id": item}).status_code == 200
            recs = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()["items"]
            hits += nxt[walk[-1]] in [r["item_id"] for r in recs]
        return hits

    starts = ids[::25][:12]  # 12 walks over distinct items: no co-visit pair links one walk to another
    before = probe("seq-before", starts[:6])
    statuses, sentiment, stop = [], [], threading.Event()

    def hammer(path: str, into: list):
        with httpx.Client(base_url=str(client.base_url), headers=dict(client.headers), timeout=60) as c:
            while not stop.is_set():
                if path == "/v1/sentiment":
                    into.append(c.post(path, json={"texts": ["还不错"]}).status_code)
                else:
                    into.append(c.get(path, params={"k": 5}).status_code)

    threads = [threading.Thread(target=hammer, args=("/v1/users/seq-before-0/recommendations", statuses)),
               threading.Thread(target=hammer, args=("/v1/sentiment", sentiment))]
    for t in threads:
        t.start()
    try:
        # new args: the ingress (sequence_model) and the encoder (sentiment_head) are both replaced
        _switch(client, args.model_copy(update={"sequence_model": promoted, "sentiment_head": "probe"}),
                ("sentiment_probe", f"+sequence-{out.name}"))
        ready = client.get("/readyz").json()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        assert ready["sequence_model"] == f"sequence-{out.name}", ready
        after = probe("seq-after", starts[6:])
    finally:
        stop.set()
        for t in threads:
            t.join()
        _switch(client, args, "sentiment-ft", gone=out.name)
        Path(promoted).unlink()  # the promoted copy in $ECREC_HOME/sequence: nothing serves it now
    assert client.get("/readyz").json()["model"] == before_model
    for got in (statuses, sentiment):
        assert len(got) > 10 and set(got) == {200}, {s: got.count(s) for s in set(got)}
    assert before <= 2 and after >= 5, (before, after)
