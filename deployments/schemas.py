"""HTTP request/response models (``/v1``). Validation errors become 422s naming the field."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ecrec.events import EventType


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


class SentimentOut(BaseModel):
    label: str
    probs: dict[str, float]


class ClauseOut(BaseModel):
    text: str
    sentiment: SentimentOut


class TextOut(BaseModel):
    text: str
    language: str
    truncated: bool
    sentiment: SentimentOut
    clauses: list[ClauseOut]


class RecommendationOut(BaseModel):
    item_id: str
    title: str
    score: float
    source: str
    reason: str
    category: list[str]
    price: float
    parts: dict[str, float] | None = None


class EventOut(BaseModel):
    event_id: str
    user_id: str
    applied: bool = Field(description="False when this event_id had already been applied")
    profile_version: int
    analysis: TextOut | None = None
    recommendations: list[RecommendationOut] | None = None


class RecommendationsOut(BaseModel):
    user_id: str | None
    cold_start: bool
    items: list[RecommendationOut]


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[\w.@:+-]+$")
    text: str | None = None
    k: int = Field(default=10, ge=1, le=100)
    category: list[str] | None = None
    min_price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    in_stock: bool = False
    explain: bool = False


class SentimentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1)


class SentimentBatchOut(BaseModel):
    model: str
    results: list[TextOut]


class ItemIn(BaseModel):
    """An item's fields; the id comes from the URL."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=500)
    description: str = Field(default="", max_length=5000)
    category: list[str] = Field(default_factory=list, max_length=8)
    brand: str = ""
    tags: list[str] = Field(default_factory=list, max_length=50)
    attributes: dict[str, str] = Field(default_factory=dict)
    price: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    rating: float = Field(default=0.0, ge=0, le=5, allow_inf_nan=False)
    stock: int = Field(default=1, ge=0)
    language: str = "en"
    created_at: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    rebuyable: bool = False
