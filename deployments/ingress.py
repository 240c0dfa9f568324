"""The HTTP ingress (FastAPI): validates, routes to encoder / profile shards / retriever, answers."""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError

from deployments import schemas as s
from deployments.catalog_board import get_board
from deployments.drift import get_drift
from deployments.config import AppArgs
from deployments.http_guards import Guards
from deployments.profiles import get_shards
from deployments.retriever import make_retrievers
from ecrec.profiles.events import Event, FutureTimestampError, check_timestamp
from ecrec.retrieval.index import Filters
from ecrec.operations.experiments import DEFAULT_ARM
from ecrec.profiles.shard import shard_of
from ecrec.operations.security import Gate, RateLimiter, keys_from_env
from ecrec.text.sentiment import AnalysisFailure
from ecrec.text.prepare import TextError, clean, encoder_rows

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
    of memory) is a 503 that says so; the event was not acknowledged, so a retry is safe."""
    from ecrec.profiles.store import is_store_error

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


_STATIC_TYPES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                 "style.css": "text/css; charset=utf-8"}
# The page loads only its own files and calls only this origin.
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def _static(name: str):
    """The storefront's files (``ecrec/storefront``), by an allow-list of names."""
    from pathlib import Path

    from fastapi.responses import Response

    if name not in _STATIC_TYPES:
        raise ApiError(404, f"no static file {name!r}")
    path = Path(__file__).resolve().parents[1] / "ecrec" / "storefront" / name
    return Response(path.read_bytes(), media_type=_STATIC_TYPES[name], headers=_PAGE_HEADERS)


def _chat_slots(slots: dict) -> dict:
    """Slots as the API shows them: a resolved product as {item_id, title}."""
    out = dict(slots)
    if out.get("product"):
        out["product"] = {"item_id": out["product"]["item_id"], "title": out["product"]["title"]}
    return out


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(self, args: AppArgs, encoder):
        import itertools

        from ray.util import metrics

        self.args, self.encoder = args, encoder
        self.retrievers = make_retrievers(args, serve.get_replica_context().replica_id.unique_id)
        self._next_retriever = itertools.cycle(self.retrievers)
        manifest = json.loads((args.resolved_index_dir() / "manifest.json").read_text())
        self.shards = get_shards(args, manifest["dim"])
        self.board = get_board(args)
        self.drift = get_drift(args)
        from ecrec.chat.upset import UpsetDetector

        self.upset = UpsetDetector.load(args.model, manifest["dim"])
        # every ecrec metric carries model_version: "<encoder+heads>@<index artifact>" (``_version``)
        self.m_events = metrics.Counter("ecrec_events", "events applied", tag_keys=("type", "model_version"))
        self.m_sentiment = metrics.Counter("ecrec_sentiment", "texts classified", tag_keys=("label", "model_version"))
        self.m_recs = metrics.Counter("ecrec_recommendations", "recommendation lists served",
                                      tag_keys=("model_version",))
        self.m_impr = metrics.Counter("ecrec_impressions", "items shown", tag_keys=("model_version",))
        self.m_chat = metrics.Counter("ecrec_chat_turns", "chat turns answered", tag_keys=("route", "model_version"))
        self.m_intent = metrics.Counter("ecrec_intents", "texts by customer-service intent ('none': not a "
                                        "service request)", tag_keys=("label", "model_version"))

        keys = keys_from_env()
        _GUARD_SETTINGS.update(max_body_bytes=args.max_body_bytes, max_in_flight=args.max_in_flight,
                               gate=Gate(keys, args.read_requires_key) if keys else None,
                               limiter=RateLimiter(args.rate_limit_per_s))
        if not keys:
            log.warning("no API key set (ECREC_API_KEY): every route is open; bind 127.0.0.1 only")
        # Impressions and interaction counts are soft signals: buffered and flushed every 100 ms
        # as one call per shard, instead of two extra remote calls on every request.
        self._served: dict[int, list] = {}  # shard -> lists shown (attribution, impressions)
        from ecrec.operations.retrain import sequence_version

        # the ranking side of the version: the index artifact, and the sequence retriever when it
        # is not the shipped one ("<artifact 8 hex>+sequence-<run>", "+none" when it is off)
        self.sequence_version = sequence_version(args.sequence_model)
        self.index_version = "+".join(v for v in ((manifest.get("artifact_id") or "")[:8], self.sequence_version) if v)
        self.encoder_version = ""  # the encoder's model + heads: the last analysis', refreshed every 10 s
        self._version_at = 0.0
        self.experiment = args.experiment()  # A/B arms of the ranking, or None
        self._interactions: list = []
        self._shown: list = []
        self._drift_texts: list = []  # (float16 vector, sentiment, intent, language) for the drift monitor
        self._drift_items: list = []
        self._flusher = asyncio.get_event_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            try:
                self._flush()
            except Exception:  # soft signals: a batch lost to a failing actor is not retried
                log.exception("flushing impressions failed")
            if time.monotonic() - self._version_at > 10.0:  # a switch seen even without text traffic
                self._version_at = time.monotonic()
                try:  # bounded: a busy encoder must not hold up the flushes
                    self.encoder_version = (await asyncio.wait_for(self.encoder.info.remote(), 2.0))["model"]
                except Exception:  # an encoder restarting: the version stays the last one seen
                    log.warning("could not read the encoder's model version yet; keeping %r", self.encoder_version)

    def _version(self, analysis=None) -> str:
        """The model version on metrics and attributed lists: the encoder's model + heads (the one
        that analysed ``analysis``, else the last seen) and the first 8 hex of the index artifact."""
        if analysis is not None and analysis.model:
            self.encoder_version = analysis.model
        return f"{self.encoder_version}@{self.index_version}"

    def _flush(self) -> None:
        batches, self._served = self._served, {}
        for idx, batch in batches.items():
            self.shards[idx].served_many.remote(batch)
        if self._interactions or self._shown:
            inter, shown, self._interactions, self._shown = self._interactions, self._shown, [], []
            self.board.note.remote(inter, shown)
        if self._drift_texts or self._drift_items:
            texts, items, self._drift_texts, self._drift_items = self._drift_texts, self._drift_items, [], []
            self.drift.observe.remote(texts, items, self._version())

    def _observe(self, analysis=None, item_id: str | None = None) -> None:
        """What the drift monitor compares with its reference: each text, and each item event."""
        if analysis is not None:
            intent = analysis.intent.label if analysis.intent is not None else None
            if intent is not None:
                self.m_intent.inc(tags={"label": intent, "model_version": self._version(analysis)})
            self._drift_texts.append((analysis.vector.astype(np.float16), analysis.sentiment.label, intent,
                                      analysis.language))
        if item_id is not None:
            self._drift_items.append(item_id)

    async def _encoder_call(self, method: str, *args):
        """Encoder calls are pure, so one that dies with its replica is sent again once: Serve
        routes it to another replica or to the one replacing it."""
        try:
            return await getattr(self.encoder, method).remote(*args)
        except RayActorError:
            log.warning("encoder replica died during %s; retrying once", method)
            return await getattr(self.encoder, method).remote(*args)

    def _analyze(self, text: str):
        return asyncio.ensure_future(self._encoder_call("analyze", text))

    @property
    def retriever(self):
        """Round-robin over this replica's retriever pool."""
        return next(self._next_retriever)

    def _shard(self, user_id: str):
        return self.shards[shard_of(user_id, len(self.shards))]

    async def _recommend(self, user_id, k, filters, text_vec=None, text=None, explain=False, source=None):
        """(cold start?, items with their 1-based ``position``, the list's request id). ``source``
        names where the list is shown for attribution (a chat answer), else each item's own source."""
        # The profile goes from the shard straight to the retriever (an ObjectRef argument is
        # resolved by Ray), so the ingress waits once and never unpickles it.
        idx = shard_of(user_id, len(self.shards)) if user_id else None
        arm = self.experiment.arm_of(user_id) if self.experiment else None
        if user_id and self.args.colocate_retrieval:
            cold, items = await self.shards[idx].recommend_for.remote(user_id, k, filters, text_vec, text, arm)
        else:
            profile_ref = self.shards[idx].get_blob.remote(user_id) if user_id else None
            cold, items = await self.retriever.recommend.remote(profile_ref, k, filters, text_vec, text, None, arm)
        for pos, i in enumerate(items, start=1):
            i["position"] = pos
            if not explain:
                del i["parts"]
        self.m_recs.inc(tags={"model_version": self._version()})
        request_id = self._served_list(user_id, [(i["item_id"], source or i["source"]) for i in items], cold,
                                       impressions=True, arm=arm)
        return cold, items, request_id

    def _served_list(self, user_id: str | None, items: list[tuple[str, str]], cold: bool,
                     impressions: bool = False, arm: str | None = None) -> str:
        """Queue a shown list for its user's shard (attribution, and with ``impressions`` the
        profile's impressions; flushed every 100 ms) and return its request id, which events may
        name to be attributed to it."""
        request_id = uuid.uuid4().hex
        idx = shard_of(user_id, len(self.shards)) if user_id else 0
        impressions = bool(impressions and user_id and items and self.args.record_impressions)
        self._served.setdefault(idx, []).append((request_id, user_id, items, time.time(), arm or DEFAULT_ARM,
                                                 self._version(), cold, impressions))
        if impressions:
            self._shown.extend(i for i, _ in items)
            self.m_impr.inc(len(items), tags={"model_version": self._version()})
        return request_id

    @staticmethod
    def _filters(category, min_price, max_price, in_stock) -> Filters:
        try:
            return Filters(categories=frozenset(category) if category else None, min_price=min_price,
                           max_price=max_price, in_stock=in_stock)
        except ValueError as e:
            raise ApiError(422, str(e)) from e

    @app.post("/v1/events", response_model=s.EventOut, response_model_exclude_none=True)
    async def post_event(self, body: s.EventIn, recommend: int = Query(0, ge=0, le=100)) -> dict:
        fields = body.model_dump(exclude_none=True, exclude={"request_id"})
        fields["event_id"] = body.event_id or uuid.uuid4().hex
        fields["ts"] = body.ts if body.ts is not None else time.time()
        event = Event(**fields)
        check_timestamp(event.ts, time.time(), self.args.max_future_skew_s)
        _text("text", event.text)
        item_ref = self.retriever.item_vector.remote(event.item_id) if event.item_id else None
        text_ref = self._analyze(event.text) if event.text is not None else None
        item_vec = await item_ref if item_ref else None
        if event.item_id and item_vec is None:
            raise ApiError(404, f"unknown item id {event.item_id!r}")
        analysis = _analysis_or_422("text", await text_ref) if text_ref is not None else None
        version, applied, covisit, hit = await self._shard(event.user_id).apply.remote(event, item_vec, analysis,
                                                                                       body.request_id)
        if applied:
            self._observe(analysis, event.item_id)
            self.m_events.inc(tags={"type": event.type, "model_version": self._version(analysis)})
            if analysis is not None:
                self.m_sentiment.inc(tags={"label": analysis.sentiment.label,
                                           "model_version": self._version(analysis)})
            if event.item_id:
                from ecrec.profiles.profile import ProfileConfig

                w = ProfileConfig().item_weight(event.type)
                self._interactions.append((event.item_id, w, event.type in ("click", "cart", "purchase"),
                                           covisit))
        out = {"event_id": event.event_id, "user_id": event.user_id, "applied": applied,
               "profile_version": version, "analysis": _out_analysis(analysis) if analysis else None,
               "attribution": hit}
        if recommend:
            _, out["recommendations"], out["recommendations_request_id"] = await self._recommend(
                event.user_id, recommend, None)
        return out

    @app.get("/v1/users/{user_id}/recommendations", response_model=s.RecommendationsOut,
             response_model_exclude_none=True)
    async def get_recommendations(self, user_id: str, k: int = Query(10, ge=1, le=100),
                                  category: list[str] | None = Query(None),
                                  min_price: float | None = Query(None, ge=0),
                                  max_price: float | None = Query(None, ge=0),
                                  in_stock: bool = False, explain: bool = False) -> dict:
        s.RecommendIn(user_id=user_id)  # same id rules as everywhere
        filters = self._filters(category, min_price, max_price, in_stock)
        cold, items, request_id = await self._recommend(user_id, k, filters, explain=explain)
        # A Response skips re-validating what we built ourselves (the model still documents it).
        return JSONResponse({"user_id": user_id, "cold_start": cold, "request_id": request_id, "items": items})

    @app.post("/v1/recommendations", response_model=s.RecommendationsOut, response_model_exclude_none=True)
    async def post_recommendations(self, body: s.RecommendIn) -> dict:
        if body.user_id is None and body.text is None:
            raise ApiError(422, "give user_id, text, or both")
        filters = self._filters(body.category, body.min_price, body.max_price, body.in_stock)
        text_vec = text = None
        if body.text is not None:
            _text("text", body.text)
            analysis = _analysis_or_422("text", await self._analyze(body.text))
            text_vec, text = analysis.vector, analysis.text
        cold, items, request_id = await self._recommend(body.user_id, body.k, filters, text_vec, text, body.explain)
        return {"user_id": body.user_id, "cold_start": cold, "request_id": request_id, "items": items}

    @app.post("/v1/sentiment", response_model=s.SentimentBatchOut)
    async def post_sentiment(self, body: s.SentimentIn) -> dict:
        """Sentiment of each text and its clauses (and its intent, when an intent branch is served)."""
        return await self._analyze_texts(body.texts, need_intent=False)

    @app.post("/v1/intent", response_model=s.SentimentBatchOut)
    async def post_intent(self, body: s.SentimentIn) -> dict:
        """Customer-service intent of each text (same analysis; 404 when intents are not served)."""
        return await self._analyze_texts(body.texts, need_intent=True)

    async def _analyze_texts(self, texts: list[str], need_intent: bool) -> dict:
        if len(texts) > self.args.max_sentiment_texts:
            raise ApiError(422, f"texts: at most {self.args.max_sentiment_texts} per request, got {len(texts)}")
        for i, t in enumerate(texts):
            _text(f"texts[{i}]", t)
        rows = sum(encoder_rows(t) for t in texts)
        if rows > self.args.max_encoder_rows:
            raise ApiError(422, f"texts: {rows} encoder rows (texts plus their clauses) exceed the limit of "
                                f"{self.args.max_encoder_rows} per request; send fewer or shorter texts")
        info = await self.encoder.info.remote()
        if need_intent and not info["intent"]:
            raise ApiError(404, "intents are not served: this app runs with intent_head=none")
        results = await asyncio.gather(*(self._analyze(t) for t in texts))
        results = [_analysis_or_422(f"texts[{i}]", a) for i, a in enumerate(results)]
        for a in results:
            self.m_sentiment.inc(tags={"label": a.sentiment.label, "model_version": self._version(a)})
        # the model that analysed them (two, joined, when a head switch fell inside this request)
        return {"model": ",".join(sorted({a.model for a in results})) or info["model"],
                "results": [_out_analysis(a) for a in results]}

    @app.post("/v1/search", response_model=s.SearchOut, response_model_exclude_none=True)
    async def post_search(self, body: s.SearchIn) -> dict:
        """Hybrid search (BM25 with Chinese segmentation + the encoder), re-ranked by the profile."""
        t0 = time.perf_counter()
        _text("query", body.query)
        filters = self._filters(body.category, body.min_price, body.max_price, body.in_stock)
        analysis = _analysis_or_422("query", await self._analyze(body.query))
        profile_ref = self._shard(body.user_id).get_blob.remote(body.user_id) if body.user_id else None
        search = self.retriever.search.remote(profile_ref, analysis.text, analysis.vector, body.k, filters)
        if body.user_id:  # the query is also a search event of the profile (after this ranking)
            event = Event(user_id=body.user_id, type="search", text=analysis.text, ts=time.time(),
                          event_id=uuid.uuid4().hex)
            items, _ = await asyncio.gather(search, self._shard(body.user_id).apply.remote(event, None, analysis))
            self._observe(analysis)
            self.m_events.inc(tags={"type": "search", "model_version": self._version(analysis)})
        else:
            items = await search
        for pos, i in enumerate(items, start=1):
            i["position"] = pos
            if not body.explain:
                del i["parts"]
        request_id = self._served_list(body.user_id, [(i["item_id"], "search") for i in items], False)
        return {"query": body.query, "user_id": body.user_id, "request_id": request_id, "items": items,
                "took_ms": round((time.perf_counter() - t0) * 1000, 2)}

    async def _intents_served(self) -> bool:
        if getattr(self, "_intent_model", None) is None:
            self._intent_model = (await self.encoder.info.remote())["intent"] or ""
        return bool(self._intent_model)

    async def _chat_session(self, user_id: str, session_id: str):
        from ecrec.chat.session import SESSION_ID

        if not SESSION_ID.match(session_id):
            raise ApiError(422, "session_id: 1-64 letters, digits, '_', '.', ':' or '-'")
        state, status = await self._shard(user_id).chat_get.remote(user_id, session_id, self.args.chat_idle_s)
        if state is None:  # another user's session is unknown to this user: the same 404, nothing leaked
            raise ApiError(404, f"chat session {session_id!r} is {'expired' if status == 'expired' else 'unknown'} "
                                f"for user {user_id!r}; start a new one by omitting session_id")
        return state

    @app.post("/v1/chat", response_model=s.ChatOut, response_model_exclude_none=True)
    async def post_chat(self, body: s.ChatIn) -> dict:
        """One turn of a customer-service conversation (intents, slots, escalation, product answers)."""
        from ecrec.chat.dialogue import check_message, product_reply, respond, understanding
        from ecrec.chat.replies import reply_language
        from ecrec.chat.session import ChatSession

        _text("message", body.message)
        try:
            check_message(body.message)
        except TextError as e:
            raise ApiError(422, f"message: {e}") from e
        if not await self._intents_served():
            raise ApiError(404, "chat needs intents, and this app runs with intent_head=none")
        now = time.time()
        text_ref = self._analyze(body.message)
        state = (await self._chat_session(body.user_id, body.session_id) if body.session_id
                 else ChatSession.new(body.user_id, now))
        analysis = _analysis_or_422("message", await text_ref)
        product, known = await self.retriever.chat_lookup.remote(analysis.text, analysis.vector)
        lang = reply_language(analysis.text, body.language, state.language if state.turns else None)
        new, turn = respond(state, analysis.text, understanding(analysis, self.upset), lang, now, product, known)
        recs, event, recs_id = None, None, None
        if turn.product_query:
            filters = self._filters(turn.categories or None, turn.price.min_price, turn.price.max_price, False)
            _, recs, recs_id = await self._recommend(body.user_id, self.args.chat_recommendations, filters,
                                                     analysis.vector, analysis.text, source="chat")
            relaxed = not recs and bool(turn.price)
            if relaxed:  # nothing within the stated price: the nearest items without it, said so
                _, recs, recs_id = await self._recommend(body.user_id, self.args.chat_recommendations,
                                                         self._filters(turn.categories or None, None, None, False),
                                                         analysis.vector, analysis.text, source="chat")
            turn.reply = new.last_reply = product_reply(lang, (new.session_id, new.turns), len(recs), relaxed)
            event = Event(user_id=body.user_id, type="question", text=analysis.text, ts=now,
                          event_id=f"chat:{new.session_id}:{new.turns}")
        stored, _ = await self._shard(body.user_id).chat_commit.remote(new, state.turns, event,
                                                                      analysis if event else None)
        if not stored:
            raise ApiError(409, f"another message of session {new.session_id!r} was answered meanwhile; "
                                "send this one again")
        self._observe(analysis)
        self.m_chat.inc(tags={"route": turn.route, "model_version": self._version(analysis)})
        self.m_sentiment.inc(tags={"label": analysis.sentiment.label, "model_version": self._version(analysis)})
        i = analysis.intent
        out = {"session_id": new.session_id, "turn": new.turns, "language": lang,
               "intent": {"label": i.label, "confidence": i.confidence, "top": i.top},
               "sentiment": {"label": analysis.sentiment.label, "probs": analysis.sentiment.probs},
               "slots": _chat_slots(new.slots), "reply": turn.reply, "route": turn.route, "actions": turn.actions,
               "escalate": turn.escalate, "recommendations": recs, "request_id": recs_id}
        return out

    @app.get("/v1/chat/{session_id}", response_model=s.ChatSummaryOut)
    async def get_chat(self, session_id: str,
                       user_id: str = Query(min_length=1, max_length=128, pattern=r"^[\w.@:+-]+$")) -> dict:
        """A session's summary: turns, pending intent, slots, sentiment trend, escalation."""
        state = await self._chat_session(user_id, session_id)
        out = state.summary()
        out["slots"] = _chat_slots(out["slots"])
        return out

    @app.put("/v1/items/{item_id}")
    async def put_item(self, item_id: str, body: s.ItemIn) -> dict:
        from ecrec.retrieval.catalog import Item

        fields = body.model_dump(exclude_none=True)
        item = Item(id=item_id, **fields)
        [vec] = await self._encoder_call("embed_passages", [item.embedding_text()])
        seq = await self.board.put.remote(item.model_dump_json(), vec)
        return {"item": json.loads(item.model_dump_json()), "seq": seq,
                "propagation": f"all replicas within {self.args.sync_interval_s:.1f}s"}

    @app.get("/v1/items/{item_id}")
    async def get_item(self, item_id: str) -> dict:
        item = await self.retriever.get_item.remote(item_id)
        if item is None:
            raise ApiError(404, f"unknown item id {item_id!r}")
        return json.loads(item.model_dump_json())

    @app.delete("/v1/items/{item_id}")
    async def delete_item(self, item_id: str) -> dict:
        if await self.retriever.get_item.remote(item_id) is None:
            raise ApiError(404, f"unknown item id {item_id!r}")
        seq = await self.board.delete.remote(item_id)
        return {"item_id": item_id, "deleted": True, "seq": seq}

    @app.delete("/v1/users/{user_id}")
    async def delete_user(self, user_id: str) -> dict:
        existed = await self._shard(user_id).delete.remote(user_id)
        return {"user_id": user_id, "deleted": existed}

    @app.post("/v1/admin/reload")
    async def admin_reload(self) -> dict:
        """Swap the models and index artifact the long-lived actors hold (retrievers, and the
        retrievers inside shards with ``colocate_retrieval``), without recreating them."""
        import ray

        colocate = self.args if self.args.colocate_retrieval else None
        # every ingress replica's pool, found by name, not only this replica's
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == self.args.namespace and a["name"].startswith("ecrec-retriever-")]
        pool = [ray.get_actor(n, namespace=self.args.namespace) for n in names] or self.retrievers
        views = await asyncio.gather(*(r.reload.remote() for r in pool))
        await asyncio.gather(*(sh.reload.remote(colocate) for sh in self.shards))
        return {"retrievers": len(views), "shards": len(self.shards),
                "artifact_id": views[0]["artifact_id"] if views else None}

    @app.get("/v1/admin/metrics/summary")
    async def metrics_summary(self, window_s: float = Query(3600.0, gt=0, le=86400)) -> dict:
        """Online metrics over the last ``window_s`` seconds, summed over every shard: CTR and CVR
        by source, position bucket and arm, coverage, cold-start share, sentiment mix
        (``ecrec.operations.attribution``; the same counts are in Prometheus)."""
        from ecrec.operations.attribution import merge, report

        now = time.time()
        windows = await asyncio.gather(*(sh.metrics_window.remote(window_s, now) for sh in self.shards))
        catalog = (await self.retriever.info.remote())["items"]
        return {**report(merge(windows), catalog, window_s), "model_version": self._version()}

    @app.get("/v1/admin/drift")
    async def drift_scores(self) -> dict:
        """Drift of recent texts and events against the reference (``ecrec.operations.drift``):
        scores, the alarms raised and why; ``ready`` is false until enough texts arrived."""
        return await self.drift.scores.remote()

    @app.get("/v1/admin/drift/history")
    async def drift_history(self) -> dict:
        """Drift scores over the last day: a point a minute and one at every alarm change
        (``ecrec.operations.drift_history``; ``ecrec drift-plot`` draws them)."""
        return {"points": await self.drift.history_points.remote()}

    @app.post("/v1/admin/drift/reference")
    async def drift_refit(self) -> dict:
        """Make the recent window the drift reference (after a deliberate change: a new market,
        a retrained model)."""
        try:
            return await self.drift.refit.remote()
        except RayTaskError as e:
            if isinstance(e.cause, ValueError):
                raise ApiError(409, str(e.cause)) from e
            raise

    # ---- content, product pages and the storefront ------------------------------------------
    @app.get("/v1/items", response_model=s.ItemPageOut)
    async def list_items(self, category: str | None = Query(None, max_length=100),
                         k: int = Query(24, ge=1, le=100), offset: int = Query(0, ge=0)) -> dict:
        """A page of the catalog (a storefront's grid), optionally one top category."""
        total, items = await self.retriever.list_items.remote(category, k, offset)
        return JSONResponse({"total": total, "items": items})

    @app.get("/v1/items/{item_id}/related", response_model=s.RelatedOut, response_model_exclude_none=True)
    async def related(self, item_id: str, kind: Literal["content", "product"] = "content",
                      k: int = Query(4, ge=1, le=50), language: str | None = Query(None, pattern=r"^[a-z]{2}$"),
                      explain: bool = False) -> dict:
        """For a product page: guides about the item (or its nearest), or similar products."""
        items = await self.retriever.related.remote(item_id, kind, k, language, explain)
        if items is None:
            raise ApiError(404, f"unknown item id {item_id!r}")
        return JSONResponse({"item_id": item_id, "kind": kind, "items": items})

    @app.get("/v1/users/{user_id}/content", response_model=s.ContentListOut, response_model_exclude_none=True)
    async def user_content(self, user_id: str, k: int = Query(5, ge=1, le=50),
                           language: str | None = Query(None, pattern=r"^[a-z]{2}$"), explain: bool = False) -> dict:
        """Guides and articles ranked by the same profile as the products."""
        s.RecommendIn(user_id=user_id)  # same id rules as everywhere
        profile_ref = self._shard(user_id).get_blob.remote(user_id)
        cold, items = await self.retriever.content_for.remote(profile_ref, k, language, explain)
        return JSONResponse({"user_id": user_id, "cold_start": cold, "items": items})

    @app.put("/v1/content/{content_id}")
    async def put_content(self, content_id: str, body: s.ContentIn) -> dict:
        from ecrec.content.library import Content

        doc = Content(id=content_id, **body.model_dump(exclude_none=True))
        unknown = [i for i, it in zip(doc.item_ids, await asyncio.gather(
            *(self.retriever.get_item.remote(i) for i in doc.item_ids))) if it is None]
        if unknown:
            raise ApiError(422, f"item_ids: unknown item ids {unknown[:5]}")
        [vec] = await self._encoder_call("embed_passages", [doc.embedding_text()])
        seq = await self.board.put_content.remote(doc.model_dump_json(), vec)
        return {"content": json.loads(doc.model_dump_json()), "seq": seq,
                "propagation": f"all replicas within {self.args.sync_interval_s:.1f}s"}

    @app.get("/v1/content/{content_id}")
    async def get_content(self, content_id: str) -> dict:
        doc = await self.retriever.get_content.remote(content_id)
        if doc is None:
            raise ApiError(404, f"unknown content id {content_id!r}")
        return json.loads(doc.model_dump_json())

    @app.delete("/v1/content/{content_id}")
    async def delete_content(self, content_id: str) -> dict:
        if await self.retriever.get_content.remote(content_id) is None:
            raise ApiError(404, f"unknown content id {content_id!r}")
        seq = await self.board.delete_content.remote(content_id)
        return {"content_id": content_id, "deleted": True, "seq": seq}

    @app.get("/v1/storefront", response_model=s.StorefrontOut)
    async def storefront_config(self) -> dict:
        """What the storefront page needs to know before its first call."""
        gate = _GUARD_SETTINGS.get("gate")
        return {"auth_required": gate is not None, "read_requires_key": gate is not None and gate.read_requires_key,
                "chat": await self._intents_served(), "languages": ["zh", "en"]}

    @app.get("/", include_in_schema=False)
    async def storefront(self):
        return _static("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(self, name: str):
        return _static(name)

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self):
        try:
            enc, ret, *_ = await asyncio.wait_for(asyncio.gather(
                self.encoder.info.remote(), *(r.info.remote() for r in self.retrievers),
                self.board.last_seq.remote(), *(sh.ping.remote() for sh in self.shards)), timeout=5)
        except Exception as e:  # anything not answering means not ready
            return JSONResponse({"ready": False, "error": f"{type(e).__name__}: {e}"[:300]},
                                status_code=503, headers={"Retry-After": "1"})
        return {"ready": True, "model": enc["model"], "intent_model": enc["intent"], "device": enc["device"],
                "model_version": f"{enc['model']}@{self.index_version}",
                "sequence_model": self.sequence_version or "shipped",
                "items": ret["items"],
                "shards": len(self.shards)}
