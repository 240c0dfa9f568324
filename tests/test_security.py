"""API keys, route classes, rate limits and the HTTP guards (a real FastAPI app over ASGI)."""
import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI

from deployments.http_guards import Guards
from ecrec.operations.security import Gate, KeyConfigError, RateLimiter, bind_check, keys_from_env, route_class

WRITER = "w" * 24
READER = "r" * 24
ADMIN = "a" * 24
KEYS = keys_from_env({"ECREC_API_KEYS": json.dumps([
    {"name": "shop", "key": WRITER, "classes": ["read", "write"]},
    {"name": "bi", "key": READER, "classes": ["read"], "rate_per_s": 2},
    {"name": "ops", "key": ADMIN, "classes": ["admin"]},
])})


@pytest.mark.parametrize("method,path,cls", [
    ("GET", "/v1/users/u1/recommendations", "read"), ("POST", "/v1/recommendations", "read"),
    ("GET", "/v1/items/x", "read"), ("HEAD", "/v1/items/x", "read"), ("POST", "/v1/sentiment", "read"),
    ("POST", "/v1/intent", "read"), ("POST", "/v1/events", "write"), ("PUT", "/v1/items/x", "admin"),
    ("DELETE", "/v1/items/x", "admin"), ("DELETE", "/v1/users/u1", "admin"), ("POST", "/v1/admin/reload", "admin"),
    ("GET", "/v1/admin/stats", "admin"), ("GET", "/healthz", "public"), ("GET", "/openapi.json", "public"),
    ("GET", "/v1/users/u1/recommendations/../../admin", "admin"), ("PATCH", "/v1/events", "admin"),
])
def test_every_route_has_a_class(method, path, cls):
    assert route_class(method, path) == cls


def test_gate_decisions():
    gate = Gate(KEYS)
    ok = lambda d: d.status == 0  # noqa: E731
    assert ok(gate.check("GET", "/v1/items/x", None, "1.2.3.4"))  # reads open by default
    assert gate.check("POST", "/v1/events", None, "h").status == 401
    assert gate.check("POST", "/v1/events", "Basic xyz", "h").status == 401
    assert gate.check("POST", "/v1/events", "Bearer " + "x" * 24, "h").message == "unknown API key"
    assert ok(gate.check("POST", "/v1/events", "Bearer " + WRITER, "h"))
    d = gate.check("POST", "/v1/events", "Bearer " + READER, "h")
    assert d.status == 403 and "'bi' may not call write" in d.message and READER not in d.message
    assert gate.check("DELETE", "/v1/users/u", "Bearer " + WRITER, "h").status == 403
    assert ok(gate.check("DELETE", "/v1/users/u", "bearer " + ADMIN, "h"))
    closed = Gate(KEYS, read_requires_key=True)
    assert closed.check("GET", "/v1/items/x", None, "h").status == 401
    assert ok(closed.check("GET", "/v1/items/x", "Bearer " + READER, "h"))
    assert ok(closed.check("GET", "/healthz", None, "h"))


def test_key_config_errors():
    with pytest.raises(KeyConfigError, match="not JSON"):
        keys_from_env({"ECREC_API_KEYS": "shop=abc"})
    with pytest.raises(KeyConfigError, match="16 characters"):
        keys_from_env({"ECREC_API_KEYS": '[{"key": "short"}]'})
    with pytest.raises(KeyConfigError, match="classes"):
        keys_from_env({"ECREC_API_KEYS": json.dumps([{"key": "k" * 20, "classes": ["root"]}])})
    [k] = keys_from_env({"ECREC_API_KEY": "single-key-0123456789"})
    assert k.classes == {"read", "write", "admin"} and "single-key" not in repr(k)
    with pytest.raises(KeyConfigError, match="ECREC_API_KEY must have at least 16"):
        keys_from_env({"ECREC_API_KEY": "short"})


def test_rate_limiter_refills():
    rl = RateLimiter(rate_per_s=10, burst_s=1.0)
    assert [rl.retry_after("k", 100.0) for _ in range(10)] == [0] * 10
    assert rl.retry_after("k", 100.0) == 1
    assert rl.retry_after("other", 100.0) == 0  # per caller
    assert rl.retry_after("k", 100.2) == 0 and rl.retry_after("k", 100.2) == 0  # 0.2 s: two tokens
    assert rl.retry_after("k", 100.2) == 1
    assert RateLimiter(0).retry_after("k", 1.0) == 0  # 0: off
    assert rl.retry_after("slow", 0.0, rate=0.1) == 0 and rl.retry_after("slow", 0.0, rate=0.1) == 10


def test_bind_check():
    assert "127.0.0.1 only" in bind_check("127.0.0.1", [])
    with pytest.raises(KeyConfigError, match="refusing to bind 0.0.0.0"):
        bind_check("0.0.0.0", [])
    assert "1 (default)" in bind_check("0.0.0.0", keys_from_env({"ECREC_API_KEY": "k" * 20}))


def _app(settings: dict, slow: asyncio.Event | None = None) -> FastAPI:
    app = FastAPI()
    app.add_middleware(Guards, **settings)

    @app.post("/v1/events")
    async def events(body: dict):
        if slow is not None:
            await slow.wait()
        return {"got": body}

    @app.get("/v1/items/{item_id}")
    async def item(item_id: str):
        return {"id": item_id}

    @app.get("/healthz")
    async def health():
        return {"ok": True}

    return app


def _run(coro):
    return asyncio.run(coro)


def test_guards_over_asgi(caplog):
    settings = {"max_body_bytes": 1024, "max_in_flight": 8, "gate": Gate(KEYS), "limiter": RateLimiter(100)}

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(settings)), base_url="http://t") as c:
            r = await c.post("/v1/events", json={"a": 1})
            assert r.status_code == 401 and r.json()["detail"].startswith("write routes need")
            assert r.headers["www-authenticate"] == "Bearer"
            r = await c.post("/v1/events", json={"a": 1}, headers={"Authorization": f"Bearer {WRITER}"})
            assert r.status_code == 200 and r.json() == {"got": {"a": 1}}
            r = await c.post("/v1/events", json={"t": "x" * 2000}, headers={"Authorization": f"Bearer {WRITER}"})
            assert r.status_code == 413 and "exceeds the limit of 1024" in r.text
            r = await c.post("/v1/events", content=b'{"t": "\\ud800"}', headers={
                "Authorization": f"Bearer {WRITER}", "content-type": "application/json"})
            assert r.status_code == 422 and "surrogate" in r.text
            r = await c.post("/v1/events", content=b'{"t": "\\ud83d\\ude00"}', headers={  # a real pair: fine
                "Authorization": f"Bearer {WRITER}", "content-type": "application/json"})
            assert r.status_code == 200 and r.json() == {"got": {"t": "😀"}}
            r = await c.post("/v1/events", content=b'{"t": "\xff\xfe"}', headers={
                "Authorization": f"Bearer {WRITER}", "content-type": "application/json"})
            assert r.status_code == 400 and "UTF-8" in r.text
            assert (await c.get("/v1/items/x")).status_code == 200
            codes = [(await c.get("/v1/items/x", headers={"Authorization": f"Bearer {READER}"})).status_code
                     for _ in range(6)]  # bi: 2 per second, burst 4
            assert codes.count(429) >= 1 and codes[:4] == [200] * 4
            r = await c.get("/v1/items/x", headers={"Authorization": f"Bearer {READER}"})
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "'bi'" not in r.text

    with caplog.at_level("WARNING"):
        _run(go())
    assert WRITER not in caplog.text and READER not in caplog.text and "401 POST /v1/events" in caplog.text


def test_guards_shed_past_max_in_flight():
    release = asyncio.Event()
    settings = {"max_body_bytes": 1024, "max_in_flight": 3, "gate": None, "limiter": None}

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(settings, release)),
                                     base_url="http://t") as c:
            held = [asyncio.create_task(c.post("/v1/events", json={"n": i})) for i in range(3)]
            await asyncio.sleep(0.1)
            r = await c.post("/v1/events", json={"n": 9})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert (await c.get("/healthz")).status_code == 200  # probes are never shed
            release.set()
            assert [x.status_code for x in await asyncio.gather(*held)] == [200] * 3
            assert (await c.post("/v1/events", json={"n": 10})).status_code == 200  # recovered

    _run(go())
