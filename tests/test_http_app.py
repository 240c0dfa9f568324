"""The HTTP layer as explicit services (issue 30): the app is built per replica by
``http_app.build_http_app``, its guards configured by their constructor (no module global changed at
start), its routes plain module functions (nothing registered to travel by value) whose uses of the
ingress are declared by each family's ``Protocol``. Ray is not started: real FastAPI apps answer
real requests over ASGI; the services are the few attributes the routes asked for."""
from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import json
import pickle
import typing
from types import SimpleNamespace

import httpx
import ray.cloudpickle

from deployments import http_app, http_guards, routes_admin, routes_catalog, routes_chat, routes_recommend
from deployments.config import AppArgs
from ecrec.operations.security import Gate, RateLimiter, keys_from_env

ROUTES = (routes_admin, routes_catalog, routes_chat, routes_recommend)
PROTOCOLS = {routes_admin: routes_admin.AdminServices, routes_catalog: routes_catalog.CatalogServices,
             routes_chat: routes_chat.ChatServices, routes_recommend: routes_recommend.RecommendServices}
WRITER = "w" * 24
KEYS = keys_from_env({"ECREC_API_KEYS": json.dumps([{"name": "shop", "key": WRITER, "classes": ["read", "write"]}])})


def _globals(module) -> dict:
    """A module's globals that a start could change: (identity, a copy of the value when it is a container)."""
    return {k: (id(v), json.dumps(v, default=repr, sort_keys=True) if isinstance(v, (dict, list, set)) else None)
            for k, v in vars(module).items() if not k.startswith("__")}


async def _answers(app, calls):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return [await c.request(method, path, **kw) for method, path, kw in calls]


def test_two_apps_guard_by_their_own_settings_and_no_module_global_changes():
    """Two replicas' apps in one process: each guard enforces its own body limit and API keys, each
    storefront route reports its own app's keys; the HTTP layer's modules are as they were."""
    before = {m.__name__: _globals(m) for m in (http_app, http_guards, *ROUTES)}
    small = http_app.build_http_app(SimpleNamespace(gate=None), max_body_bytes=100, max_in_flight=8,
                                    gate=None, limiter=None)
    gated = http_app.build_http_app(SimpleNamespace(gate=Gate(KEYS)), max_body_bytes=10_000, max_in_flight=8,
                                    gate=Gate(KEYS), limiter=RateLimiter(100))
    body = json.dumps({"user_id": "u1", "type": "view", "text": "x" * 400}).encode()
    calls = [("POST", "/v1/events", {"content": body, "headers": {"content-type": "application/json"}}),
             ("GET", "/v1/storefront", {}), ("GET", "/healthz", {})]
    s1, f1, h1 = asyncio.run(_answers(small, calls))
    s2, f2, h2 = asyncio.run(_answers(gated, calls))
    [s3] = asyncio.run(_answers(gated, [("POST", "/v1/events", {"json": {"user_id": "u1"},
                                                                "headers": {"Authorization": f"Bearer {WRITER}"}})]))
    assert (s1.status_code, s1.json()) == (413, {"detail": f"body of {len(body)} bytes exceeds the "
                                                           "limit of 100"})
    assert (s2.status_code, s2.json()["detail"]) == (401, "write routes need 'Authorization: Bearer <key>'")
    assert s2.headers["www-authenticate"] == "Bearer"
    # past the gate with a key: the app's own validation answers (the project's 422 shape, no input echoed)
    assert s3.status_code == 422 and s3.json()["detail"][0]["loc"] == ["body", "type"], s3.text
    assert f1.json() == {"auth_required": False, "read_requires_key": False, "chat": True, "languages": ["zh", "en"]}
    assert f2.json() == {"auth_required": True, "read_requires_key": False, "chat": True, "languages": ["zh", "en"]}
    assert h1.json() == h2.json() == {"status": "ok"}
    assert {m.__name__: _globals(m) for m in (http_app, http_guards, *ROUTES)} == before
    assert not hasattr(http_app, "app") and not hasattr(http_app, "_GUARD_SETTINGS")


def test_the_ingress_builds_its_app_from_its_own_state():
    """``Ingress.__serve_build_asgi_app__`` (what Serve calls on the replica after ``__init__``) hands
    the guards the replica's args, keys and limiter, and the routes the replica itself."""
    from deployments.ingress import Ingress

    args = AppArgs().model_copy(update={"max_body_bytes": 50, "max_in_flight": 3})
    replica = SimpleNamespace(args=args, gate=Gate(KEYS, read_requires_key=True), limiter=RateLimiter(5))
    app = Ingress.func_or_class.__serve_build_asgi_app__(replica)
    assert app.state.services is replica
    big, front = asyncio.run(_answers(app, [("POST", "/v1/events", {"content": b"{" + b" " * 60 + b"}",
                                                                    "headers": {"Authorization": f"Bearer {WRITER}"}}),
                                            ("GET", "/v1/storefront", {})]))
    assert (big.status_code, big.json()["detail"]) == (413, "body of 62 bytes exceeds the limit of 50")
    assert front.json()["auth_required"] is True and front.json()["read_requires_key"] is True


def test_routes_are_plain_functions_that_travel_by_reference():
    """Every endpoint is a module-level function of a route module: pickled (plain pickle and Ray's
    cloudpickle, after the ingress module is imported) it is found again by name, the same object,
    which a module registered to travel by value would not be."""
    import deployments.ingress  # noqa: F401  (it once registered the route modules by value)

    app = http_app.build_http_app(None, max_body_bytes=1, max_in_flight=1, gate=None, limiter=None)
    endpoints = [r.endpoint for r in _walk(app) if hasattr(r, "endpoint") and r.endpoint.__module__ in
                 {m.__name__ for m in ROUTES}]
    assert len(endpoints) == 28  # every route of the four families (the rest: /openapi.json, /docs, /redoc)
    for f in endpoints:
        assert getattr(importlib.import_module(f.__module__), f.__qualname__) is f, f
        assert pickle.loads(pickle.dumps(f)) is f
        assert ray.cloudpickle.loads(ray.cloudpickle.dumps(f)) is f, f"{f.__module__}.{f.__name__} travels by value"
    again = http_app.build_http_app(None, max_body_bytes=1, max_in_flight=1, gate=None, limiter=None)
    assert [r.path for r in _walk(again)] == [r.path for r in _walk(app)]
    assert again.state.services is None and again is not app


def _walk(router):
    for r in router.routes:
        if hasattr(r, "original_router"):  # an included router (FastAPI >= 0.137)
            yield from _walk(r.original_router)
        else:
            yield r


def _protocol_members(proto) -> set[str]:
    return {k for k in (*typing.get_type_hints(proto), *vars(proto)) if not k.startswith("_")}


def _ingress_members() -> set[str]:
    """The Ingress's public attributes: those its ``__init__`` assigns, and its methods and properties."""
    import deployments.ingress as ingress

    [cls] = [n for n in ast.parse(inspect.getsource(ingress)).body
             if isinstance(n, ast.ClassDef) and n.name == "Ingress"]
    [init] = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    assigned = {n.attr for n in ast.walk(init) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                and isinstance(n.value, ast.Name) and n.value.id == "self"}
    return {k for k in assigned | set(dir(ingress.Ingress.func_or_class)) if not k.startswith("_")}


def test_each_route_family_uses_only_what_it_declares_and_the_ingress_provides_it():
    provided = _ingress_members()
    for module, proto in PROTOCOLS.items():
        declared = _protocol_members(proto)
        assert declared and declared <= provided, (proto.__name__, sorted(declared - provided))
        used = {n.attr for n in ast.walk(ast.parse(inspect.getsource(module))) if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name) and n.value.id == "svc"}
        assert used == declared, (proto.__name__, "undeclared", sorted(used - declared),
                                  "unused", sorted(declared - used))


def test_the_services_dependency_runs_on_the_event_loop():
    """FastAPI runs a plain ``def`` dependency in its thread pool: a thread hop on every request,
    which cut GET recommendations at 16 concurrent from 112 to 81 req/s. Every route depends on
    ``services``, so it must be a coroutine function."""
    import inspect

    from deployments.http_app import services

    assert inspect.iscoroutinefunction(services)
