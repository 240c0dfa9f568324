"""Who may call what: route classes, API keys, per-key rate limits and load shedding.

Every route belongs to one class:

- ``read``: recommendations, item and content reads, sentiment and intent (open unless configured closed);
- ``write``: events, searches, chat turns and chat session summaries (they hold contact details);
- ``admin``: item and content PUT/DELETE, user DELETE and ``/v1/admin/*``;
- ``public``: health, readiness, the API docs and the storefront page's own files (always open:
  probes and clients need them; the page holds no data and asks for a key when one is needed).

Anything not listed is ``admin`` (deny by default). Keys come from the environment only:
``ECREC_API_KEY`` (one key, every class) and/or ``ECREC_API_KEYS``, a JSON list of
``{"name": ..., "key": ..., "classes": ["read", "write"], "rate_per_s": 50}``. Keys are compared
in constant time and never logged; errors name the key's ``name``, never the key.
"""
from __future__ import annotations

import hmac
import json
import math
import os
import re
from dataclasses import dataclass, field

CLASSES = ("read", "write", "admin")
_RULES: list[tuple[str, re.Pattern, str]] = [
    ("GET", re.compile(r"^/(healthz|readyz|docs|redoc|openapi\.json|docs/oauth2-redirect)$"), "public"),
    ("GET", re.compile(r"^/(|static/(app\.js|style\.css)|v1/storefront)$"), "public"),  # the page asks for a key
    ("GET", re.compile(r"^/v1/users/[^/]+/recommendations$"), "read"),
    ("GET", re.compile(r"^/v1/users/[^/]+/content$"), "read"),
    ("GET", re.compile(r"^/v1/items$"), "read"),
    ("GET", re.compile(r"^/v1/items/[^/]+/related$"), "read"),
    ("GET", re.compile(r"^/v1/content/[^/]+$"), "read"),
    ("POST", re.compile(r"^/v1/recommendations$"), "read"),
    ("GET", re.compile(r"^/v1/items/[^/]+$"), "read"),
    ("POST", re.compile(r"^/v1/(sentiment|intent)$"), "read"),
    ("POST", re.compile(r"^/v1/events$"), "write"),
    ("POST", re.compile(r"^/v1/search$"), "write"),  # with a user_id it is a search event of the profile
    ("POST", re.compile(r"^/v1/chat$"), "write"),  # it changes the profile and the session
    ("GET", re.compile(r"^/v1/chat/[^/]+$"), "write"),  # a session holds contact details: not a plain read
    ("PUT", re.compile(r"^/v1/items/[^/]+$"), "admin"),
    ("DELETE", re.compile(r"^/v1/items/[^/]+$"), "admin"),
    ("DELETE", re.compile(r"^/v1/users/[^/]+$"), "admin"),
    ("PUT", re.compile(r"^/v1/content/[^/]+$"), "admin"),
    ("DELETE", re.compile(r"^/v1/content/[^/]+$"), "admin"),
]


def route_class(method: str, path: str) -> str:
    """The class of a request; HEAD is GET; anything unknown (``/v1/admin/*`` included) is admin."""
    method = "GET" if method == "HEAD" else method
    for m, pattern, cls in _RULES:
        if m == method and pattern.match(path):
            return cls
    return "admin"


@dataclass
class ApiKey:
    name: str
    key: str = field(repr=False)
    classes: frozenset[str]
    rate_per_s: float | None = None  # None: the service default


class KeyConfigError(ValueError):
    pass


def keys_from_env(env: dict | None = None) -> list[ApiKey]:
    env = os.environ if env is None else env
    keys = []
    if env.get("ECREC_API_KEY"):
        if len(env["ECREC_API_KEY"]) < 16:
            raise KeyConfigError("ECREC_API_KEY must have at least 16 characters")
        keys.append(ApiKey("default", env["ECREC_API_KEY"], frozenset(CLASSES)))
    if env.get("ECREC_API_KEYS"):
        try:
            entries = json.loads(env["ECREC_API_KEYS"])
        except json.JSONDecodeError as e:
            raise KeyConfigError(f"ECREC_API_KEYS is not JSON: {e.msg}") from None
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not isinstance(e.get("key"), str) or len(e["key"]) < 16:
                raise KeyConfigError(f"ECREC_API_KEYS[{i}]: needs a 'key' of at least 16 characters")
            classes = frozenset(e.get("classes", CLASSES))
            if not classes <= set(CLASSES):
                raise KeyConfigError(f"ECREC_API_KEYS[{i}]: classes must be among {CLASSES}")
            keys.append(ApiKey(str(e.get("name", f"key{i}")), e["key"], classes, e.get("rate_per_s")))
    return keys


@dataclass
class Decision:
    status: int  # 0: allowed
    message: str = ""
    caller: str = "anonymous"  # a key's name or "ip:<address>": the rate-limit bucket
    rate_per_s: float | None = None


class Gate:
    """Authorises one request from its method, path and Authorization header."""

    def __init__(self, keys: list[ApiKey], read_requires_key: bool = False):
        self.keys, self.read_requires_key = keys, read_requires_key

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def _match(self, token: str) -> ApiKey | None:
        found = None
        for k in self.keys:  # every key compared, in constant time each: no early exit to time
            if hmac.compare_digest(token.encode(), k.key.encode()):
                found = k
        return found

    def check(self, method: str, path: str, authorization: str | None, client: str) -> Decision:
        cls = route_class(method, path)
        if not self.enabled or cls == "public" or (cls == "read" and not self.read_requires_key
                                                   and not authorization):
            return Decision(0, caller=f"ip:{client}")
        if not authorization:
            return Decision(401, f"{cls} routes need 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Decision(401, "the Authorization header must be 'Bearer <key>'")
        key = self._match(token.strip())
        if key is None:
            return Decision(401, "unknown API key")
        if cls not in key.classes:
            return Decision(403, f"key {key.name!r} may not call {cls} routes "
                                 f"(it has: {', '.join(sorted(key.classes))})")
        return Decision(0, caller=f"key:{key.name}", rate_per_s=key.rate_per_s)


class TokenBucket:
    """``rate`` requests per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, None

    def take(self, now: float) -> float:
        """0 if allowed, else the seconds until a request would be."""
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per caller (a key's name, or the client address for open reads)."""

    def __init__(self, rate_per_s: float, burst_s: float = 2.0, max_callers: int = 100_000):
        self.rate, self.burst_s, self.max_callers = rate_per_s, burst_s, max_callers
        self.buckets: dict[str, TokenBucket] = {}

    def retry_after(self, caller: str, now: float, rate: float | None = None) -> int:
        """0 if allowed, else whole seconds for ``Retry-After`` (at least 1)."""
        rate = rate or self.rate
        if rate <= 0:
            return 0
        b = self.buckets.get(caller)
        if b is None:
            if len(self.buckets) >= self.max_callers:  # bounded: forget the oldest callers
                for old in list(self.buckets)[: self.max_callers // 10]:
                    del self.buckets[old]
            b = self.buckets[caller] = TokenBucket(rate, max(1.0, rate * self.burst_s))
        wait = b.take(now)
        return 0 if wait == 0 else max(1, math.ceil(wait))


def bind_check(host: str, keys: list[ApiKey]) -> str:
    """What to say at start-up; raises if the bind would expose an unauthenticated service."""
    local = host in ("127.0.0.1", "localhost", "::1")
    if keys:
        return f"API keys: {len(keys)} ({', '.join(k.name for k in keys)}); write and admin routes need one"
    if not local:
        raise KeyConfigError(f"refusing to bind {host} without an API key: set ECREC_API_KEY "
                             "(or ECREC_API_KEYS), or bind 127.0.0.1")
    return "no API key set (ECREC_API_KEY): every route is open, so the service binds 127.0.0.1 only"
