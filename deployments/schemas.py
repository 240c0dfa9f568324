"""HTTP request/response models (``/v1``). Validation errors become 422s naming the field."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ecrec.retrieval.catalog import Item
from ecrec.content.library import Content
from ecrec.profiles.events import EventType


class ValidationItem(BaseModel):
    loc: list[str | int] = Field(description="where: body/query/path, then the field")
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every 4xx and 503: what was wrong, as a sentence or (422 from validation) a list of fields."""

    detail: str | list[ValidationItem]


ERROR_RESPONSES = {code: {"model": ErrorOut, "description": why} for code, why in (
    (400, "the body is not valid UTF-8 or not JSON"), (401, "an API key is required or unknown"),
    (403, "the key may not call this class of route"), (404, "unknown user, item, session or route"),
    (409, "another turn of the same chat session was answered meanwhile; send again"),
    (413, "the body is over the configured limit"), (422, "a field is invalid (the detail says which)"),
    (429, "the caller's rate limit is spent; see Retry-After"),
    (503, "overloaded or restarting; see Retry-After"))}


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(default=None, min_length=1, max_length=128,
                                 description="Idempotency key: a retried event_id is applied once")
    user_id: str = Field(min_length=1, max_length=128, pattern=r"^[\w.@:+-]+$")
    type: EventType
    item_id: str | None = Field(default=None, min_length=1, max_length=128)
    text: str | None = Field(default=None, description="Review, question, feedback or search text")
    rating: int | None = Field(default=None, ge=1, le=5)
    ts: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="Unix seconds; default now")
    request_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$", description=(
        "the request_id of the list (recommendations, search, chat) the shopper acted from: a click, cart or "
        "purchase of one of its items is attributed to that list's source and position"))


class AttributionOut(BaseModel):
    request_id: str
    source: str
    position: int = Field(description="1-based position of the item in that list")
    arm: str = Field(description="the A/B arm that ranked the list")
    model_version: str


class SentimentOut(BaseModel):
    label: str
    probs: dict[str, float]


class ClauseOut(BaseModel):
    text: str
    sentiment: SentimentOut


class IntentOut(BaseModel):
    label: str = Field(description="one of the 27 customer-service intents, or `none` (not a service "
                                   "request: a review, a product question, small talk)")
    confidence: float
    top: list[tuple[str, float]] = Field(description="the three likeliest intents, best first")
    clarify: bool = Field(default=False, description="confidence is under the model's calibrated threshold: "
                                                     "ask which of the top intents is meant instead of guessing")


class TextOut(BaseModel):
    text: str
    language: str
    truncated: bool
    sentiment: SentimentOut
    clauses: list[ClauseOut]
    intent: IntentOut | None = Field(default=None, description="absent when the app runs with intent_head=none")


class RecommendationOut(BaseModel):
    item_id: str
    title: str
    score: float
    source: str
    reason: str
    category: list[str]
    price: float
    position: int = Field(description="1-based position in this list")
    parts: dict[str, float] | None = None


class EventOut(BaseModel):
    event_id: str
    user_id: str
    applied: bool = Field(description="False when this event_id had already been applied")
    profile_version: int
    analysis: TextOut | None = None
    attribution: AttributionOut | None = Field(default=None, description=(
        "where the item was shown, when request_id names a list that showed it (and this event was applied)"))
    recommendations: list[RecommendationOut] | None = None
    recommendations_request_id: str | None = None


class RecommendationsOut(BaseModel):
    user_id: str | None = Field(default=None, description="absent for a text-only request")
    cold_start: bool
    request_id: str = Field(description="name it in the events this list leads to (attribution)")
    items: list[RecommendationOut]


class ListIn(BaseModel):
    """What every ranked list takes: its length, the filters, and whether to explain scores."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(default=10, ge=1, le=100)
    category: list[str] | None = None
    min_price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    in_stock: bool = False
    explain: bool = False


class RecommendIn(ListIn):
    user_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[\w.@:+-]+$")
    text: str | None = None


class SentimentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1)


class SentimentBatchOut(BaseModel):
    model: str
    results: list[TextOut]


# An item's fields as the catalog defines them, less the id (it comes from the URL).
ItemIn = create_model(
    "ItemIn", __config__=ConfigDict(extra="forbid"),
    **{name: (f.annotation, f) for name, f in Item.model_fields.items() if name != "id"},
)


MAX_CHAT_CHARS = 1000


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=128, pattern=r"^[\w.@:+-]+$")
    session_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[\w.:-]+$",
                                   description="continue this session (from an earlier answer); omit to start one")
    message: str = Field(min_length=1, max_length=MAX_CHAT_CHARS)
    language: Literal["zh", "en"] | None = Field(default=None, description="reply language; default: the message's")


class ChatIntentOut(BaseModel):
    label: str
    confidence: float
    top: list[tuple[str, float]]


class ChatOut(BaseModel):
    session_id: str
    turn: int
    language: str
    intent: ChatIntentOut | None = Field(default=None, description="absent when the encoder serves "
                                         "intent_head=none: the chat then answers product questions, small "
                                         "talk and requests for a human, and hands other messages to a person")
    sentiment: SentimentOut
    slots: dict = Field(description="every slot filled so far in this session (order_id, email, phone, amount, "
                                    "product)")
    reply: str
    route: str = Field(description="service | slot | clarify | escalate | product | smalltalk")
    actions: list[dict] = Field(description="tasks completed this turn, for the shop's systems "
                                            "(e.g. {\"type\": \"track_order\", \"order_id\": \"…\"})")
    escalate: bool
    recommendations: list[RecommendationOut] | None = None
    request_id: str | None = Field(default=None, description="the recommendations' list id, for attribution")


class ChatSummaryOut(BaseModel):
    session_id: str
    user_id: str
    language: str
    turns: int
    pending_intent: str | None
    slots: dict
    sentiment_trend: list[str]
    intents: list[str]
    escalated: bool
    escalation_reason: str | None
    last_reply: str
    created_at: float
    updated_at: float


class SearchIn(ListIn):
    query: str = Field(min_length=1, max_length=500)
    user_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[\w.@:+-]+$",
                                description="personalize (and record the query as a search event of this user)")


class SearchItemOut(BaseModel):
    item_id: str
    title: str
    score: float
    category: list[str]
    price: float
    position: int = Field(description="1-based position in this list")
    parts: dict[str, float] | None = Field(default=None, description="with explain: the lexical and semantic "
                                                                       "rank-fusion parts and the personal term")


class SearchOut(BaseModel):
    query: str
    user_id: str | None = None
    request_id: str = Field(description="name it in the events these results lead to (attribution)")
    items: list[SearchItemOut]
    took_ms: float


# ---- content (guides, articles, reviews) and the storefront ----------------------------------
ContentIn = create_model(
    "ContentIn", __config__=ConfigDict(extra="forbid"),
    **{name: (f.annotation, f) for name, f in Content.model_fields.items() if name != "id"},
)


class ContentHitOut(BaseModel):
    content_id: str
    title: str
    summary: str
    language: str
    kind: str
    category: list[str]
    item_ids: list[str]
    score: float
    reason: str
    parts: dict[str, float] | None = None


class ContentListOut(BaseModel):
    user_id: str
    cold_start: bool
    items: list[ContentHitOut]


class RelatedProductOut(BaseModel):
    item_id: str
    title: str
    score: float
    category: list[str]
    price: float
    reason: str


class RelatedOut(BaseModel):
    item_id: str
    kind: Literal["content", "product"]
    items: list[ContentHitOut] | list[RelatedProductOut]


class ItemPageOut(BaseModel):
    total: int = Field(description="items in the (filtered) catalog")
    items: list[dict]


class StorefrontOut(BaseModel):
    auth_required: bool = Field(description="write routes (events, search, chat) need an API key")
    read_requires_key: bool
    chat: bool = Field(description="the chat answers (always, since it answers without intents too)")
    languages: list[str]
