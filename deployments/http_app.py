"""The FastAPI app the ingress serves, built by ``build_http_app`` on each replica: its error
handlers, the ASGI guards (configured by their constructor) and the route families
(``routes_admin``, ``routes_catalog``, ``routes_chat``, ``routes_recommend``: ``APIRouter``s of
plain module functions), plus the helpers that turn texts and analyses into answers.

Why a factory, and not one module-level app: the app is state of a replica (its guards' limits
and API keys, the services its routes call), so it is built there, after the replica's state
exists, and nothing at module level changes at start. The ingress hands itself in as the routes'
services; each route declares what it uses as a ``Protocol`` in its own module and receives the
object through ``Depends(services)``. The routes are importable by reference: nothing travels by
value, and two apps built in one process share no state."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError

from deployments import schemas as s
from deployments.http_guards import Guards
from ecrec.operations.security import Gate, RateLimiter
from ecrec.profiles.events import FutureTimestampError
from ecrec.retrieval.index import Filters
from ecrec.text.prepare import TextError, clean
from ecrec.text.sentiment import AnalysisFailure

log = logging.getLogger(__name__)


def build_http_app(services, *, max_body_bytes: int, max_in_flight: int, gate: Gate | None,
                   limiter: RateLimiter | None) -> FastAPI:
    """The app of one ingress replica: ``services`` is what its routes call (the ``Ingress``; each
    route family's ``Protocol`` says what it needs), the rest configures its ``Guards``."""
    # the route modules import this module's helpers: imported here, once this module exists
    from deployments import routes_admin, routes_catalog, routes_chat, routes_recommend

    app = FastAPI(title="ecrec", version="1", description="Real-time, text-aware recommendations",
                  responses=s.ERROR_RESPONSES)
    app.state.services = services
    for exc, handler in ((ApiError, _api_error), (RequestValidationError, _validation_error),
                         (ValidationError, _validation_error), (FutureTimestampError, _future_ts),
                         (TextError, _text_error), (RayActorError, _overloaded),
                         (BackPressureError, _overloaded), (RayTaskError, _remote_error)):
        app.add_exception_handler(exc, handler)
    app.add_middleware(Guards, max_body_bytes=max_body_bytes, max_in_flight=max_in_flight, gate=gate,
                       limiter=limiter)
    for routes in (routes_admin, routes_catalog, routes_chat, routes_recommend):  # (the schema's order)
        app.include_router(routes.router)
    return app


async def services(request: Request):
    """The routes' dependency: the services of the app that received the request (its ingress).
    A coroutine on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread
    hop on every request (GET recommendations at 16 concurrent: 81 req/s against 112 with Serve's
    own async ``self`` dependency, BENCHMARKS.md "serve")."""
    return request.app.state.services


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers


async def _api_error(_: Request, e: ApiError):
    return JSONResponse({"detail": e.message}, status_code=e.status, headers=e.headers)


async def _validation_error(_: Request, e: ValidationError | RequestValidationError):
    # never echo the input: it may be NaN or Infinity, which JSON cannot carry (that was a 500)
    return JSONResponse({"detail": [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
                                     for err in e.errors()]}, status_code=422)


async def _future_ts(_: Request, e: FutureTimestampError):
    return JSONResponse({"detail": f"ts: {e}"}, status_code=422)


async def _text_error(_: Request, e: TextError):
    return JSONResponse({"detail": f"text: {e}"}, status_code=422)


async def _overloaded(_: Request, e: Exception):
    return JSONResponse({"detail": "overloaded or restarting, retry shortly"}, status_code=503,
                        headers={"Retry-After": "1"})


async def _remote_error(_: Request, e: RayTaskError):
    """A remote call that raised. A store that could not take a write (disk full, Redis down or out
    of memory), or a shard replaced by a newer incarnation (fenced), is a 503 that says so; the
    event was not acknowledged, so a retry is safe."""
    from ecrec.profiles.fencing import FencedError
    from ecrec.profiles.store import is_store_error

    if isinstance(e.cause, FencedError):  # the retry reaches the new incarnation
        log.warning("%s", e.cause)
        return JSONResponse({"detail": str(e.cause)}, status_code=503, headers={"Retry-After": "1"})
    if is_store_error(e.cause):
        log.error("profile store error: %s: %s", type(e.cause).__name__, e.cause)
        return JSONResponse({"detail": f"the profile store could not take this request ({type(e.cause).__name__}: "
                                       f"{str(e.cause)[:200]}); nothing was applied, retry shortly"},
                            status_code=503, headers={"Retry-After": "1"})
    raise e


def _filters(category, min_price, max_price, in_stock) -> Filters:
    try:
        return Filters(categories=frozenset(category) if category else None, min_price=min_price,
                       max_price=max_price, in_stock=in_stock)
    except ValueError as e:
        raise ApiError(422, str(e)) from e


def _text(field: str, value: str | None) -> None:
    """Reject empty/whitespace text up front (422), before it reaches a batch."""
    if value is not None:
        try:
            clean(value)
        except TextError as e:
            raise ApiError(422, f"{field}: {e}") from e


def _analysis_or_422(field: str, a):
    """The encoder isolates a text that fails inside a batch; that text alone gets the error:
    422 when the text was refused, 503 (retry) when the model failed on it."""
    if isinstance(a, AnalysisFailure):
        if a.client_error:
            raise ApiError(422, f"{field}: could not be analysed ({a.message})")
        log.error("the encoder failed on %s: %s", field, a.message)
        raise ApiError(503, f"{field}: the encoder failed on this text; retry shortly", {"Retry-After": "1"})
    return a


def _out_analysis(a) -> dict:
    sent = lambda x: {"label": x.label, "probs": x.probs}  # noqa: E731
    intent = None if a.intent is None else {"label": a.intent.label, "confidence": a.intent.confidence,
                                            "top": a.intent.top, "clarify": a.intent.clarify}
    return {"text": a.text, "language": a.language, "truncated": a.truncated, "sentiment": sent(a.sentiment),
            "clauses": [{"text": c.text, "sentiment": sent(c.sentiment)} for c in a.clauses], "intent": intent}
