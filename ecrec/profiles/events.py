"""Shopper events: what they did (item events) and what they wrote (text events)."""
from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EventType = Literal["view", "click", "cart", "purchase", "dislike", "review", "question", "feedback", "search"]
ITEM_EVENTS = ("view", "click", "cart", "purchase", "dislike")
# The positive item events that count as a click: ItemStats' click counts (the ranker's CTR) and the
# events attribution credits to a served list. Their weights are ProfileConfig's; both are read
# through ``ProfileConfig.interaction``.
CLICK_TYPES = ("click", "cart", "purchase")
TEXT_EVENTS = ("question", "feedback", "search")
MAX_TEXT_CHARS = 1_000_000  # hard cap on what we accept at all; cleaning truncates far below it
MAX_FUTURE_SKEW_S = 300.0  # clients' clocks may run a little ahead; more than this is refused


class FutureTimestampError(ValueError):
    """An event stamped too far in the future: it would out-date every real event after it."""


def check_timestamp(ts: float, now: float, max_future_skew_s: float = MAX_FUTURE_SKEW_S) -> None:
    """Refuse ``ts`` beyond ``now + max_future_skew_s``. Old timestamps stay valid: replays of
    history use them, and profiles decay events that arrive in any order."""
    if ts > now + max_future_skew_s:
        raise FutureTimestampError(f"ts {ts:.0f} is {ts - now:.0f} s in the future "
                                   f"(at most {max_future_skew_s:.0f} s of clock skew is accepted)")


class Event(BaseModel):
    """One event. Item events need ``item_id``; question/feedback/search need ``text``;
    a review needs ``text`` or ``rating`` (1-5 stars) and usually names the item."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(min_length=1, max_length=128, pattern=r"^[\w.@:+-]+$")
    type: EventType
    item_id: str | None = Field(default=None, min_length=1, max_length=128)
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    rating: int | None = Field(default=None, ge=1, le=5)
    ts: float = Field(default_factory=time.time, ge=0, allow_inf_nan=False)
    event_id: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _needs(self) -> "Event":
        if self.text is not None and not self.text.strip():
            raise ValueError("text must not be empty or only whitespace")
        if self.type in ITEM_EVENTS and self.item_id is None:
            raise ValueError(f"a {self.type} event needs item_id")
        if self.type in TEXT_EVENTS and self.text is None:
            raise ValueError(f"a {self.type} event needs text")
        if self.type == "review" and self.text is None and self.rating is None:
            raise ValueError("a review needs text or rating")
        if self.rating is not None and self.type not in ("review", "feedback"):
            raise ValueError(f"rating is only allowed on review and feedback, not {self.type}")
        return self
