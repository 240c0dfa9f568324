"""Search and customer-service chat routes of the ingress: an ``APIRouter`` of plain functions,
which receive what they use, declared by ``ChatServices``, through ``Depends(services)`` (the
app factory, ``http_app.build_http_app``, says why)."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Protocol

from fastapi import APIRouter, Depends, Query

from deployments import schemas as s
from deployments.config import AppArgs
from deployments.http_app import ApiError, _analysis_or_422, _filters, _text, services
from ecrec.profiles.events import Event
from ecrec.text.prepare import TextError

router = APIRouter()


class ChatServices(Protocol):
    """What search and chat use of the ingress (``deployments.ingress.Ingress`` provides it)."""

    args: AppArgs
    upset: Any  # ecrec.chat.upset.UpsetDetector
    m_events: Any  # metrics counters
    m_chat: Any
    m_sentiment: Any

    @property
    def retriever(self) -> Any: ...
    def analyze(self, text: str) -> Any: ...
    def remote_profile(self, user_id: str | None) -> Any: ...
    def shard(self, user_id: str) -> Any: ...
    def observe(self, analysis=None, item_id: str | None = None) -> None: ...
    def model_version(self, analysis=None) -> str: ...
    def served_list(self, user_id: str | None, items: list[tuple[str, str]], cold: bool,
                    impressions: bool = False, arm: str | None = None) -> str: ...
    async def recommend(self, user_id, k, filters, text_vec=None, text=None, explain=False, source=None,
                        product_answer=False): ...


def _chat_slots(slots: dict) -> dict:
    """Slots as the API shows them: a resolved product as {item_id, title}."""
    out = dict(slots)
    if out.get("product"):
        out["product"] = {"item_id": out["product"]["item_id"], "title": out["product"]["title"]}
    return out


@router.post("/v1/search", response_model=s.SearchOut, response_model_exclude_none=True)
async def post_search(body: s.SearchIn, svc: ChatServices = Depends(services)) -> dict:
    """Hybrid search (BM25 with Chinese segmentation + the encoder), re-ranked by the profile."""
    t0 = time.perf_counter()
    _text("query", body.query)
    filters = _filters(body.category, body.min_price, body.max_price, body.in_stock)
    analysis = _analysis_or_422("query", await svc.analyze(body.query))
    profile_ref = svc.remote_profile(body.user_id)
    search = svc.retriever.search.remote(profile_ref, analysis.text, analysis.vector, body.k, filters)
    if body.user_id:  # the query is also a search event of the profile (after this ranking)
        event = Event(user_id=body.user_id, type="search", text=analysis.text, ts=time.time(),
                      event_id=uuid.uuid4().hex)
        items, _ = await asyncio.gather(search, svc.shard(body.user_id).apply.remote(event, None, analysis))
        svc.observe(analysis)
        svc.m_events.inc(tags={"type": "search", "model_version": svc.model_version(analysis)})
    else:
        items = await search
    for pos, i in enumerate(items, start=1):
        i["position"] = pos
        if not body.explain:
            del i["parts"]
    request_id = svc.served_list(body.user_id, [(i["item_id"], "search") for i in items], False)
    return {"query": body.query, "user_id": body.user_id, "request_id": request_id, "items": items,
            "took_ms": round((time.perf_counter() - t0) * 1000, 2)}


async def _chat_session(svc: ChatServices, user_id: str, session_id: str):
    from ecrec.chat.session import SESSION_ID

    if not SESSION_ID.match(session_id):
        raise ApiError(422, "session_id: 1-64 letters, digits, '_', '.', ':' or '-'")
    state, status = await svc.shard(user_id).chat_get.remote(user_id, session_id, svc.args.chat_idle_s)
    if state is None:  # another user's session is unknown to this user: the same 404, nothing leaked
        raise ApiError(404, f"chat session {session_id!r} is {'expired' if status == 'expired' else 'unknown'} "
                            f"for user {user_id!r}; start a new one by omitting session_id")
    return state


@router.post("/v1/chat", response_model=s.ChatOut, response_model_exclude_none=True)
async def post_chat(body: s.ChatIn, svc: ChatServices = Depends(services)) -> dict:
    """One turn of a customer-service conversation (intents, slots, escalation, product answers).

    Whether intents are served is read from each message's analysis, never remembered: an
    encoder switched in place to ``intent_head=none`` answers without them (``ecrec.chat.dialogue``)."""
    from ecrec.chat.dialogue import check_message, product_reply, respond, understanding
    from ecrec.chat.replies import reply_language
    from ecrec.chat.session import ChatSession

    _text("message", body.message)
    try:
        check_message(body.message)
    except TextError as e:
        raise ApiError(422, f"message: {e}") from e
    now = time.time()
    text_ref = svc.analyze(body.message)
    state = (await _chat_session(svc, body.user_id, body.session_id) if body.session_id
             else ChatSession.new(body.user_id, now))
    analysis = _analysis_or_422("message", await text_ref)
    product, known = await svc.retriever.chat_lookup.remote(analysis.text, analysis.vector)
    lang = reply_language(analysis.text, body.language, state.language if state.turns else None)
    new, turn = respond(state, analysis.text, understanding(analysis, svc.upset), lang, now, product, known)
    recs, event, recs_id = None, None, None
    if turn.product_query:
        filters = _filters(turn.categories or None, turn.price.min_price, turn.price.max_price, False)
        # nothing within a stated price: the engine answers with the nearest items without it (relaxed)
        _, recs, recs_id, relaxed = await svc.recommend(body.user_id, svc.args.chat_recommendations, filters,
                                                        analysis.vector, analysis.text, source="chat",
                                                        product_answer=True)
        turn.reply = new.last_reply = product_reply(lang, (new.session_id, new.turns), len(recs), relaxed)
        event = Event(user_id=body.user_id, type="question", text=analysis.text, ts=now,
                      event_id=f"chat:{new.session_id}:{new.turns}")
    stored, _ = await svc.shard(body.user_id).chat_commit.remote(new, state.turns, event,
                                                                 analysis if event else None)
    if not stored:
        raise ApiError(409, f"another message of session {new.session_id!r} was answered meanwhile; "
                            "send this one again")
    svc.observe(analysis)
    svc.m_chat.inc(tags={"route": turn.route, "model_version": svc.model_version(analysis)})
    svc.m_sentiment.inc(tags={"label": analysis.sentiment.label, "model_version": svc.model_version(analysis)})
    i = analysis.intent  # None: the encoder serves intent_head=none
    out = {"session_id": new.session_id, "turn": new.turns, "language": lang,
           "intent": {"label": i.label, "confidence": i.confidence, "top": i.top} if i is not None else None,
           "sentiment": {"label": analysis.sentiment.label, "probs": analysis.sentiment.probs},
           "slots": _chat_slots(new.slots), "reply": turn.reply, "route": turn.route, "actions": turn.actions,
           "escalate": turn.escalate, "recommendations": recs, "request_id": recs_id}
    return out


@router.get("/v1/chat/{session_id}", response_model=s.ChatSummaryOut)
async def get_chat(session_id: str, user_id: str = Query(min_length=1, max_length=128, pattern=r"^[\w.@:+-]+$"),
                   svc: ChatServices = Depends(services)) -> dict:
    """A session's summary: turns, pending intent, slots, sentiment trend, escalation."""
    state = await _chat_session(svc, user_id, session_id)
    out = state.summary()
    out["slots"] = _chat_slots(out["slots"])
    return out
