"""Issue 12 over HTTP, on the real graph: named bad inputs, API keys, erasure, redeploys."""
from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def _raw(client, method, url, content: bytes, headers=None):
    return client.request(method, url, content=content, headers={"content-type": "application/json", **(headers or {})})


@pytest.mark.parametrize("method,url,body,status,needle", [
    # 1. a future timestamp (it froze the profile for good)
    ("POST", "/v1/events", b'{"user_id": "f", "type": "click", "item_id": "toys-001", "ts": 4000000000}', 422,
     "in the future"),
    # 3. NaN / Infinity (NaN rating was a 500), lone surrogates (a 500 on /v1/sentiment), bad UTF-8
    ("POST", "/v1/events", b'{"user_id": "u", "type": "review", "item_id": "toys-001", "rating": NaN}', 422, "rating"),
    ("POST", "/v1/events", b'{"user_id": "u", "type": "click", "item_id": "toys-001", "ts": Infinity}', 422, "ts"),
    ("POST", "/v1/sentiment", b'{"texts": ["\\ud800"]}', 422, "surrogate"),
    ("POST", "/v1/events", b'{"user_id": "u", "type": "search", "text": "ok \\udfff"}', 422, "surrogate"),
    ("PUT", "/v1/items/sur", b'{"title": "\\ud800 phone"}', 422, "surrogate"),
    ("POST", "/v1/sentiment", b'{"texts": ["\xff\xfe bad"]}', 400, "UTF-8"),
    ("POST", "/v1/recommendations", b'{"text": "tent", "min_price": -1}', 422, "min_price"),
    ("POST", "/v1/recommendations", b'{"text": "tent", "max_price": 1e999}', 422, "max_price"),
    ("POST", "/v1/recommendations", b'{"text": "tent", "k": 100000}', 422, "k"),
    ("POST", "/v1/recommendations", b'{"text": "tent", "k": -3}', 422, "k"),
    ("PUT", "/v1/items/pricey", b'{"title": "t", "price": 1e400}', 422, "price"),
    ("POST", "/v1/events", b'{"user_id": "u", "type": "search", "text": ""}', 422, "text"),
    ("POST", "/v1/events", b'{"user_id": "u", "type": "search", "text": " \\t\\n "}', 422, "text"),
    ("POST", "/v1/events", json.dumps({"user_id": "u" * 10240, "type": "search", "text": "x"}).encode(), 422, "user_id"),
    ("POST", "/v1/events", json.dumps({"user_id": "u", "type": "click", "item_id": "i" * 10240}).encode(), 422,
     "item_id"),
    ("POST", "/v1/events", json.dumps({"user_id": "u", "type": "click", "item_id": "toys-001",
                                       "event_id": "e" * 10240}).encode(), 422, "event_id"),
    ("POST", "/v1/events", b'{"user_id": "u", "type": "search", "text": "x"', 422, "json"),
])
def test_named_bad_inputs_get_a_clear_4xx(server, method, url, body, status, needle):
    client, _ = server
    r = _raw(client, method, url, body)
    assert r.status_code == status, r.text
    assert needle.lower() in r.text.lower()
    assert "detail" in r.json()


def test_ids_of_10kb_in_paths(server):
    client, _ = server
    assert client.get(f"/v1/users/{'u' * 10240}/recommendations").status_code == 422
    assert client.get(f"/v1/items/{'i' * 10240}").status_code == 404


def test_mixed_language_and_emoji_are_fine(server):
    client, _ = server
    r = client.post("/v1/events", json={"user_id": "emoji-user", "type": "review", "item_id": "phones-002",
                                        "text": "这个 phone 真的 amazing 😍👍，但是 battery 一般 🔋"})
    assert r.status_code == 200, r.text
    assert r.json()["analysis"]["language"] == "mixed" and len(r.json()["analysis"]["clauses"]) == 2


def test_long_review_is_capped_in_clauses(server):
    client, _ = server
    r = client.post("/v1/events", json={"user_id": "long-user", "type": "review", "text": "质量不错。" * 400})
    assert r.status_code == 200, r.text
    assert len(r.json()["analysis"]["clauses"]) == 16
    r = client.post("/v1/sentiment", json={"texts": ["质量不错。" * 20] * 3})  # 3 x 17 rows > 40
    assert r.status_code == 422 and "encoder rows" in r.text


def test_future_event_cannot_freeze_a_profile(server):
    client, _ = server
    user = "frozen-user"
    assert client.post("/v1/events", json={"user_id": user, "type": "click", "item_id": "books-001",
                                           "ts": 4e9}).status_code == 422
    r = client.post("/v1/events", json={"user_id": user, "type": "purchase", "item_id": "books-002"})
    assert r.status_code == 200 and r.json()["profile_version"] == 1


def test_erasure_cannot_be_undone(server):
    client, _ = server
    user = "erase-retry-user"
    e = {"event_id": "er-1", "user_id": user, "type": "click", "item_id": "toys-003"}
    assert client.post("/v1/events", json=e).json()["applied"]
    assert client.delete(f"/v1/users/{user}").json()["deleted"]
    again = client.post("/v1/events", json=e).json()  # a client retry of the old event
    assert again["applied"] is False and again["profile_version"] == 0
    in_flight = {**e, "event_id": "er-2", "ts": time.time() - 1}  # stamped before the DELETE
    assert client.post("/v1/events", json=in_flight).json()["applied"] is False
    assert client.get(f"/v1/users/{user}/recommendations").json()["cold_start"]
    fresh = client.post("/v1/events", json={**e, "event_id": "er-3"}).json()
    assert fresh["applied"] and fresh["profile_version"] == 1


def test_api_keys_by_route_class(server, read_key):
    client, _ = server
    with httpx.Client(base_url=client.base_url, timeout=30) as anon:
        r = anon.post("/v1/events", json={"user_id": "k", "type": "click", "item_id": "toys-001"})
        assert r.status_code == 401 and "Bearer" in r.json()["detail"]
        assert anon.get("/v1/users/k/recommendations").status_code == 200  # reads are open by default
        assert anon.delete("/v1/users/k").status_code == 401
        assert anon.get("/healthz").status_code == 200
        bad = anon.post("/v1/events", json={}, headers={"Authorization": "Bearer not-a-key-0123456789"})
        assert bad.status_code == 401 and "not-a-key" not in bad.text
    with httpx.Client(base_url=client.base_url, timeout=30, headers={"Authorization": f"Bearer {read_key}"}) as ro:
        r = ro.post("/v1/events", json={"user_id": "k", "type": "click", "item_id": "toys-001"})
        assert r.status_code == 403 and "may not call write" in r.json()["detail"]
        codes = [ro.get("/v1/items/toys-001") for _ in range(14)]  # 5/s, burst 10
        limited = [c for c in codes if c.status_code == 429]
        assert limited and all(int(c.headers["retry-after"]) >= 1 for c in limited)
        assert [c.status_code for c in codes[:8]] == [200] * 8


def test_redeploy_toggles_colocation_and_refuses_another_state_dir(server, tmp_path):
    """Detached shard actors used to keep their creation arguments: toggling colocate_retrieval
    gave a 500 on every GET, another state_dir was silently ignored. (Ranking has since moved from
    the shards to the ingress; the redeploy still changes where it runs, and a shard setting.)"""
    from ray import serve

    from deployments.app import build_app
    from deployments.profiles import StateMismatch, get_shards
    from ecrec.profiles.profile_layout import LayoutMismatch

    client, args = server
    mine = args.model_copy(update={"namespace": args.namespace + "-redeploy", "state_dir": str(tmp_path / "s"),
                                   "colocate_retrieval": False})
    serve.run(build_app(mine), name="ecrec-redeploy", route_prefix="/re")
    try:
        # two shoppers with the same history, each asked once (a list served counts as impressions)
        e = {"user_id": "re-user", "type": "click", "item_id": "cameras-004", "ts": time.time() - 2}
        assert client.post("/re/v1/events", json=e).status_code == 200
        assert client.post("/re/v1/events", json={**e, "user_id": "re-user-2"}).status_code == 200
        plain = client.get("/re/v1/users/re-user/recommendations", params={"k": 5})
        assert plain.status_code == 200
        serve.run(build_app(mine.model_copy(update={"colocate_retrieval": True, "snapshot_every": 7})),
                  name="ecrec-redeploy", route_prefix="/re")
        assert client.get("/re/readyz").json()["ranking"] == "ingress"
        colo = client.get("/re/v1/users/re-user-2/recommendations", params={"k": 5})
        assert colo.status_code == 200, colo.text
        assert [x["item_id"] for x in colo.json()["items"]] == [x["item_id"] for x in plain.json()["items"]]
        # a shard that crashes after the redeploy comes back with the redeploy's settings, not its first ones
        import os
        import signal

        import ray

        from deployments.profiles import shard_name
        from ecrec.profiles.shard import shard_of

        victim = ray.get_actor(shard_name(shard_of("re-user-2", mine.num_shards)), namespace=mine.namespace)
        os.kill(ray.get(victim.pid.remote()), signal.SIGKILL)
        deadline = time.time() + 60
        while True:
            again = client.get("/re/v1/users/re-user-2/recommendations", params={"k": 5})
            if again.status_code == 200 or time.time() > deadline:
                break
            assert again.status_code == 503, again.text
            time.sleep(0.5)
        assert again.status_code == 200, again.text
        assert ray.get(victim.settings.remote())["snapshot_every"] == 7
        with pytest.raises(StateMismatch, match="keeps its state in"):
            get_shards(mine.model_copy(update={"state_dir": str(tmp_path / "elsewhere")}), 384)
        with pytest.raises(LayoutMismatch, match="num_shards=3"):
            get_shards(mine.model_copy(update={"num_shards": 3}), 384)
    finally:
        serve.delete("ecrec-redeploy")


def test_text_only_recommendations_keep_their_schema(server):
    """Found by the fuzzer: a text-only request answered without the then-required user_id."""
    client, _ = server
    r = client.post("/v1/recommendations", json={"text": "a warm tent", "k": 3})
    assert r.status_code == 200
    schema = client.get("/openapi.json").json()["components"]["schemas"]["RecommendationsOut"]
    assert set(schema["required"]) <= set(r.json()), (schema["required"], r.json())


def test_admin_reload_swaps_models_in_place(server, read_key):
    import ray

    from deployments.profiles import shard_name

    client, args = server
    before = ray.get(ray.get_actor(shard_name(0), namespace=args.namespace).pid.remote())
    with httpx.Client(base_url=client.base_url, timeout=30, headers={"Authorization": f"Bearer {read_key}"}) as ro:
        assert ro.post("/v1/admin/reload").status_code == 403  # an admin route
    r = client.post("/v1/admin/reload")
    assert r.status_code == 200, r.text
    assert r.json()["retrievers"] == args.retriever_replicas and r.json()["ingress_view"]
    assert ray.get(ray.get_actor(shard_name(0), namespace=args.namespace).pid.remote()) == before  # not recreated
    assert client.get("/v1/items/toys-001").status_code == 200
    assert client.post("/v1/recommendations", json={"text": "tent", "k": 3}).json()["items"]
