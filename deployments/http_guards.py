"""ASGI guards in front of the FastAPI app (pure ASGI: no per-request task group).

In order: shed load past ``max_in_flight`` (503 + Retry-After), authorise (401/403), rate-limit
per caller (429 + Retry-After), cap the body (413), and refuse bodies that are not UTF-8 (400)
or smuggle lone surrogates in JSON escapes (422). The decisions live in ``ecrec.operations.security``.
"""
from __future__ import annotations

import json
import logging
import re
import time

from ecrec.operations.security import Gate, RateLimiter, route_class

log = logging.getLogger(__name__)
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _has_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return False
        except UnicodeEncodeError:
            return True
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


async def _reply(send, status: int, detail: str, headers: dict | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    hs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hs += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hs})
    await send({"type": "http.response.body", "body": body})


class Guards:
    """The guards of one app, configured once, by their constructor (``app.add_middleware(Guards,
    max_body_bytes=…, max_in_flight=…, gate=…, limiter=…)``): two apps guard by their own limits.
    ``gate`` None: no API keys, every route is open; ``limiter`` None: no rate limit."""

    def __init__(self, app, *, max_body_bytes: int, max_in_flight: int, gate: Gate | None = None,
                 limiter: RateLimiter | None = None):
        self.app, self.max_body_bytes, self.max_in_flight = app, max_body_bytes, max_in_flight
        self.gate, self.limiter = gate, limiter
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # an app served under a route prefix: classify its own paths
            path = path[len(root):] or "/"
        cls = route_class(method, path)
        if cls != "public" and self.in_flight >= self.max_in_flight:
            return await _reply(send, 503, "overloaded: too many requests in flight, retry shortly",
                                {"Retry-After": 1})
        gate = self.gate
        client = (scope.get("client") or ("?", 0))[0]
        if gate is not None and cls != "public":
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization")
            d = gate.check(method, path, auth.decode("latin-1") if auth is not None else None, client)
            if d.status:
                log.warning("%d %s %s from %s: %s", d.status, method, path, client, d.message)  # never the key
                return await _reply(send, d.status, d.message,
                                    {"WWW-Authenticate": "Bearer"} if d.status == 401 else None)
            limiter = self.limiter
            if limiter is not None:
                wait = limiter.retry_after(d.caller, time.monotonic(), d.rate_per_s)
                if wait:
                    return await _reply(send, 429, f"rate limit for {d.caller.split(':', 1)[0]} exceeded; "
                                                   f"retry after {wait} s", {"Retry-After": wait})
        self.in_flight += 1
        try:
            if method in ("POST", "PUT", "PATCH"):
                return await self._with_body(scope, receive, send)
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _with_body(self, scope, receive, send):
        limit = self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _reply(send, 413, f"body of {int(declared)} bytes exceeds the limit of {limit}")
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return await self.app(scope, _replay([msg]), send)
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await _reply(send, 413, f"body of {size} bytes exceeds the limit of {limit}")
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            return await _reply(send, 400, f"body is not valid UTF-8 (byte {e.start})")
        if _ESCAPED_SURROGATE.search(body):
            try:
                bad = _has_lone_surrogate(json.loads(body))
            except ValueError:
                bad = False  # not JSON: FastAPI answers that with a 422 of its own
            if bad:
                return await _reply(send, 422, "body contains a lone UTF-16 surrogate escape (not valid Unicode)")
        return await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}]), send)


def _replay(messages):
    it = iter(messages)

    async def receive():
        return next(it, {"type": "http.disconnect"})

    return receive
