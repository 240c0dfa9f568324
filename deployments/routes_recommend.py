"""Event, recommendation, text-analysis and erasure routes of the ingress: an ``APIRouter`` of
plain functions, which receive what they use, declared by ``RecommendServices``, through
``Depends(services)`` (the app factory, ``http_app.build_http_app``, says why)."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Protocol

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from deployments import schemas as s
from deployments.config import AppArgs
from deployments.http_app import ApiError, _analysis_or_422, _filters, _out_analysis, _text, services
from ecrec.profiles.events import Event, check_timestamp
from ecrec.text.prepare import encoder_rows

router = APIRouter()


class RecommendServices(Protocol):
    """What these routes use of the ingress (``deployments.ingress.Ingress`` provides it)."""

    args: AppArgs
    encoder: Any  # the Encoder deployment's handle
    m_events: Any  # metrics counters
    m_sentiment: Any
    interactions: list  # (item id, weight, strong?, co-visit) for the catalog board, flushed every 100 ms

    def item_vector(self, item_id: str) -> Any: ...
    def analyze(self, text: str) -> Any: ...
    async def encoder_call(self, method: str, *args): ...
    def shard(self, user_id: str) -> Any: ...
    def observe(self, analysis=None, item_id: str | None = None) -> None: ...
    def model_version(self, analysis=None) -> str: ...
    async def recommend(self, user_id, k, filters, text_vec=None, text=None, explain=False, source=None): ...


@router.post("/v1/events", response_model=s.EventOut, response_model_exclude_none=True)
async def post_event(body: s.EventIn, recommend: int = Query(0, ge=0, le=100),
                     svc: RecommendServices = Depends(services)) -> dict:
    fields = body.model_dump(exclude_none=True, exclude={"request_id"})
    fields["event_id"] = body.event_id or uuid.uuid4().hex
    fields["ts"] = body.ts if body.ts is not None else time.time()
    event = Event(**fields)
    check_timestamp(event.ts, time.time(), svc.args.max_future_skew_s)
    _text("text", event.text)
    item_ref = svc.item_vector(event.item_id) if event.item_id else None
    text_ref = svc.analyze(event.text) if event.text is not None else None
    item_vec = await item_ref if item_ref else None
    if event.item_id and item_vec is None:
        raise ApiError(404, f"unknown item id {event.item_id!r}")
    analysis = _analysis_or_422("text", await text_ref) if text_ref is not None else None
    version, applied, covisit, hit = await svc.shard(event.user_id).apply.remote(event, item_vec, analysis,
                                                                                  body.request_id)
    if applied:
        svc.observe(analysis, event.item_id)
        svc.m_events.inc(tags={"type": event.type, "model_version": svc.model_version(analysis)})
        if analysis is not None:
            svc.m_sentiment.inc(tags={"label": analysis.sentiment.label,
                                      "model_version": svc.model_version(analysis)})
        if event.item_id:
            w, clicked = svc.args.profile_config().interaction(event.type)
            svc.interactions.append((event.item_id, w, clicked, covisit))
    out = {"event_id": event.event_id, "user_id": event.user_id, "applied": applied,
           "profile_version": version, "analysis": _out_analysis(analysis) if analysis else None,
           "attribution": hit}
    if recommend:
        _, out["recommendations"], out["recommendations_request_id"] = await svc.recommend(
            event.user_id, recommend, None)
    return out


@router.get("/v1/users/{user_id}/recommendations", response_model=s.RecommendationsOut,
            response_model_exclude_none=True)
async def get_recommendations(user_id: str, k: int = Query(10, ge=1, le=100),
                              category: list[str] | None = Query(None),
                              min_price: float | None = Query(None, ge=0),
                              max_price: float | None = Query(None, ge=0),
                              in_stock: bool = False, explain: bool = False,
                              svc: RecommendServices = Depends(services)) -> dict:
    s.RecommendIn(user_id=user_id)  # same id rules as everywhere
    filters = _filters(category, min_price, max_price, in_stock)
    cold, items, request_id = await svc.recommend(user_id, k, filters, explain=explain)
    # A Response skips re-validating what we built ourselves (the model still documents it).
    return JSONResponse({"user_id": user_id, "cold_start": cold, "request_id": request_id, "items": items})


@router.post("/v1/recommendations", response_model=s.RecommendationsOut, response_model_exclude_none=True)
async def post_recommendations(body: s.RecommendIn, svc: RecommendServices = Depends(services)) -> dict:
    if body.user_id is None and body.text is None:
        raise ApiError(422, "give user_id, text, or both")
    filters = _filters(body.category, body.min_price, body.max_price, body.in_stock)
    text_vec = text = None
    if body.text is not None:
        _text("text", body.text)
        analysis = _analysis_or_422("text", await svc.analyze(body.text))
        text_vec, text = analysis.vector, analysis.text
    cold, items, request_id = await svc.recommend(body.user_id, body.k, filters, text_vec, text, body.explain)
    return {"user_id": body.user_id, "cold_start": cold, "request_id": request_id, "items": items}


@router.post("/v1/sentiment", response_model=s.SentimentBatchOut)
async def post_sentiment(body: s.SentimentIn, svc: RecommendServices = Depends(services)) -> dict:
    """Sentiment of each text and its clauses (and its intent, when an intent branch is served)."""
    return await _analyze_texts(svc, body.texts, need_intent=False)


@router.post("/v1/intent", response_model=s.SentimentBatchOut)
async def post_intent(body: s.SentimentIn, svc: RecommendServices = Depends(services)) -> dict:
    """Customer-service intent of each text (same analysis; 404 when intents are not served)."""
    return await _analyze_texts(svc, body.texts, need_intent=True)


async def _analyze_texts(svc: RecommendServices, texts: list[str], need_intent: bool) -> dict:
    if len(texts) > svc.args.max_sentiment_texts:
        raise ApiError(422, f"texts: at most {svc.args.max_sentiment_texts} per request, got {len(texts)}")
    for i, t in enumerate(texts):
        _text(f"texts[{i}]", t)
    rows = sum(encoder_rows(t) for t in texts)
    if rows > svc.args.max_encoder_rows:
        raise ApiError(422, f"texts: {rows} encoder rows (texts plus their clauses) exceed the limit of "
                            f"{svc.args.max_encoder_rows} per request; send fewer or shorter texts")
    info = await svc.encoder.info.remote()
    if need_intent and not info["intent"]:
        raise ApiError(404, "intents are not served: this app runs with intent_head=none")
    if len(texts) > 1:  # one call: the request's texts share forward passes, as in process
        results = await svc.encoder_call("analyze_lists", texts)
    else:
        results = await asyncio.gather(*(svc.analyze(t) for t in texts))
    results = [_analysis_or_422(f"texts[{i}]", a) for i, a in enumerate(results)]
    for a in results:
        svc.m_sentiment.inc(tags={"label": a.sentiment.label, "model_version": svc.model_version(a)})
    # the model that analysed them (two, joined, when a head switch fell inside this request)
    return {"model": ",".join(sorted({a.model for a in results})) or info["model"],
            "results": [_out_analysis(a) for a in results]}


@router.delete("/v1/users/{user_id}")
async def delete_user(user_id: str, svc: RecommendServices = Depends(services)) -> dict:
    existed = await svc.shard(user_id).delete.remote(user_id)
    return {"user_id": user_id, "deleted": existed}
