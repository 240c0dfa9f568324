"""The FastAPI app the ingress serves: its error handlers, the ASGI guards and the helpers that
turn texts and analyses into answers. Routes live on the ingress and its route mixins
(``routes_chat``, ``routes_catalog``, ``routes_admin``)."""
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
from ecrec.profiles.events import FutureTimestampError
from ecrec.text.prepare import TextError, clean
from ecrec.text.sentiment import AnalysisFailure

log = logging.getLogger(__name__)
app = FastAPI(title="ecrec", version="1", description="Real-time, text-aware recommendations",
              responses=s.ERROR_RESPONSES)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers


@app.exception_handler(ApiError)
async def _api_error(_: Request, e: ApiError):
    return JSONResponse({"detail": e.message}, status_code=e.status, headers=e.headers)


@app.exception_handler(ValidationError)
@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, e: ValidationError | RequestValidationError):
    # never echo the input: it may be NaN or Infinity, which JSON cannot carry (that was a 500)
    return JSONResponse({"detail": [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
                                     for err in e.errors()]}, status_code=422)


@app.exception_handler(FutureTimestampError)
async def _future_ts(_: Request, e: FutureTimestampError):
    return JSONResponse({"detail": f"ts: {e}"}, status_code=422)


@app.exception_handler(TextError)
async def _text_error(_: Request, e: TextError):
    return JSONResponse({"detail": f"text: {e}"}, status_code=422)


@app.exception_handler(BackPressureError)
@app.exception_handler(RayActorError)
async def _overloaded(_: Request, e: Exception):
    return JSONResponse({"detail": "overloaded or restarting, retry shortly"}, status_code=503,
                        headers={"Retry-After": "1"})


@app.exception_handler(RayTaskError)
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


# Filled in by the ingress at start-up (the middleware is built before the replica exists).
_GUARD_SETTINGS: dict = {"max_body_bytes": 2 * 1024 * 1024, "max_in_flight": 64}
app.add_middleware(Guards, settings=_GUARD_SETTINGS)


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
