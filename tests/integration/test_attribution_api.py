"""Online attribution over HTTP: a click naming its list's request_id moves that source's CTR."""
from __future__ import annotations

import json
import re
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.disruptive]  # its clicks add co-visit pairs the ranking tests would see


def _summary(client):
    r = client.get("/v1/admin/metrics/summary", params={"window_s": 3600})
    assert r.status_code == 200, r.text
    return r.json()


def test_click_with_request_id_moves_its_source_ctr(server):
    client, args = server
    assert client.post("/v1/events", json={"user_id": "attr-user", "type": "click",
                                           "item_id": "phones-001"}).status_code == 200
    recs = client.get("/v1/users/attr-user/recommendations", params={"k": 8}).json()
    request_id, items = recs["request_id"], recs["items"]
    assert len(request_id) == 32 and [i["position"] for i in items] == list(range(1, 9))
    target = items[2]
    source = target["source"]
    time.sleep(0.5)  # served lists reach the shard with the impressions flush (every 100 ms)
    before = _summary(client)["by_source"][source]
    r = client.post("/v1/events", json={"user_id": "attr-user", "type": "click", "item_id": target["item_id"],
                                        "request_id": request_id})
    assert r.status_code == 200, r.text
    hit = r.json()["attribution"]
    # the version the list was served under: the encoder's model + heads (as the encoder reports it)
    # and the first 8 hex of the index artifact the graph was built on (its manifest on disk)
    manifest = json.loads((args.resolved_index_dir() / "manifest.json").read_text())
    encoder_model = client.get("/readyz").json()["model"]
    assert encoder_model.startswith("e5-small+sentiment-ft") and len(manifest["artifact_id"]) == 32, encoder_model
    version = f"{encoder_model}@{manifest['artifact_id'][:8]}"
    assert hit == {"request_id": request_id, "source": source, "position": 3,
                   "arm": args.experiment().arm_of("attr-user"), "model_version": version}
    assert _summary(client)["model_version"] == version
    after = _summary(client)
    assert after["by_source"][source]["clicks"] == before["clicks"] + 1
    assert after["by_source"][source]["ctr"] > before["ctr"]
    assert after["by_position"]["2-3"]["clicks"] >= 1
    assert 0 < after["coverage"] <= 1 and after["lists"] >= 1

    # a purchase from the same list: CVR; a second click on it is not counted again
    client.post("/v1/events", json={"user_id": "attr-user", "type": "purchase", "item_id": target["item_id"],
                                    "request_id": request_id})
    client.post("/v1/events", json={"user_id": "attr-user", "type": "click", "item_id": target["item_id"],
                                    "request_id": request_id})
    last = _summary(client)["by_source"][source]
    assert last["clicks"] == after["by_source"][source]["clicks"] and last["purchases"] == before["purchases"] + 1

    # another user's list, or an item the list did not show, is not attributed
    r = client.post("/v1/events", json={"user_id": "attr-other", "type": "click", "item_id": target["item_id"],
                                        "request_id": request_id})
    assert r.status_code == 200 and r.json().get("attribution") is None


def test_search_results_carry_request_ids_and_bad_ids_are_422(server):
    client, _ = server
    r = client.post("/v1/search", json={"query": "降噪耳机", "user_id": "attr-searcher", "k": 5}).json()
    assert len(r["request_id"]) == 32 and [i["position"] for i in r["items"]] == list(range(1, 6))
    time.sleep(0.5)
    hit = client.post("/v1/events", json={"user_id": "attr-searcher", "type": "click",
                                          "item_id": r["items"][0]["item_id"], "request_id": r["request_id"]}).json()
    assert hit["attribution"]["source"] == "search" and hit["attribution"]["position"] == 1
    bad = client.post("/v1/events", json={"user_id": "attr-searcher", "type": "click", "item_id": "phones-001",
                                          "request_id": "not-a-request-id"})
    assert bad.status_code == 422 and "request_id" in bad.text


def test_metrics_summary_needs_an_admin_key(server, read_key):
    import httpx

    client, _ = server
    with httpx.Client(base_url=str(client.base_url), timeout=30,
                      headers={"Authorization": f"Bearer {read_key}"}) as reader:
        assert reader.get("/v1/admin/metrics/summary").status_code == 403
    assert client.get("/v1/admin/metrics/summary", params={"window_s": 0}).status_code == 422


def test_ab_arms_split_the_metrics(server):
    client, args = server
    e = args.experiment()
    users = [f"ab-user-{j}" for j in range(12)]
    for u in users:
        client.post("/v1/events", json={"user_id": u, "type": "click", "item_id": "phones-002"})
        recs = client.get(f"/v1/users/{u}/recommendations", params={"k": 3}).json()
        time.sleep(0.15)
        hit = client.post("/v1/events", json={"user_id": u, "type": "click", "item_id": recs["items"][0]["item_id"],
                                              "request_id": recs["request_id"]}).json()["attribution"]
        assert hit["arm"] == e.arm_of(u)
    arms = _summary(client)["by_arm"]
    assert set(arms) >= {e.arm_of(u) for u in users} and len({e.arm_of(u) for u in users}) == 2
    for arm in {e.arm_of(u) for u in users}:
        assert arms[arm]["clicks"] >= sum(e.arm_of(u) == arm for u in users)


def test_every_ecrec_metric_names_the_model_version(server, metrics_text):
    """Prometheus: every ecrec series carries model_version, "<encoder+heads>@<index artifact>", the
    same string /readyz and the metrics summary report."""
    client, _ = server
    version = client.get("/readyz").json()["model_version"]
    encoder, index = version.split("@")
    assert encoder.startswith("e5-small+sentiment-ft") and re.fullmatch(r"[0-9a-f]{8}", index), version
    assert _summary(client)["model_version"] == version
    recs = client.get("/v1/users/attr-version/recommendations", params={"k": 4}).json()
    client.post("/v1/events", json={"user_id": "attr-version", "type": "click", "item_id": recs["items"][0]["item_id"],
                                    "request_id": recs["request_id"], "text": "看起来不错"})
    names = ["ecrec_recommendations", "ecrec_impressions", "ecrec_events", "ecrec_sentiment", "ecrec_items_shown",
             "ecrec_lists_served", "ecrec_attributed_events"]
    for name in names:
        samples = [ln for ln in metrics_text(name, f'model_version="{version}"') if not ln.startswith("#")]
        assert samples, f"no {name} series exported"
        # every series of it names a version, and this graph's version is among them
        assert all("model_version=" in ln for ln in samples), samples
        assert any(f'model_version="{version}"' in ln for ln in samples), (version, samples)
