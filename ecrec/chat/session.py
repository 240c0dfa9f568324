"""A conversation's state: what the bot is waiting for, what it knows, how the shopper feels.

It lives with the user's profile shard and in the same durable store (``ChatSessions``), so a
restarted shard keeps the conversation, and erasing the user erases it.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field

TREND = 20  # sentiment and intent history kept per session
SESSION_ID = re.compile(r"^[\w.:-]{1,64}$")


@dataclass
class ChatSession:
    session_id: str
    user_id: str
    language: str = "en"
    turns: int = 0
    pending_intent: str | None = None
    slots: dict = field(default_factory=dict)
    sentiment: list[str] = field(default_factory=list)  # labels, oldest first (last TREND turns)
    intents: list[str] = field(default_factory=list)
    negative_streak: int = 0
    low_confidence_streak: int = 0
    escalated: bool = False
    escalation_reason: str | None = None
    last_reply: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    @classmethod
    def new(cls, user_id: str, now: float | None = None, session_id: str | None = None) -> "ChatSession":
        now = time.time() if now is None else now
        return cls(session_id or uuid.uuid4().hex, user_id, created_at=now, updated_at=now)

    def expired(self, now: float, idle_s: float) -> bool:
        return now - self.updated_at > idle_s

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "ChatSession":
        return cls(**json.loads(blob))

    def summary(self) -> dict:
        """What ``GET /v1/chat/{session_id}`` shows."""
        return {"session_id": self.session_id, "user_id": self.user_id, "language": self.language,
                "turns": self.turns, "pending_intent": self.pending_intent, "slots": dict(self.slots),
                "sentiment_trend": list(self.sentiment), "intents": list(self.intents),
                "escalated": self.escalated, "escalation_reason": self.escalation_reason,
                "last_reply": self.last_reply, "created_at": self.created_at, "updated_at": self.updated_at}


class ChatSessions:
    """Sessions of one shard's users in its ``EventStore`` (``put_chat``/``get_chat``): each
    acknowledged turn is written before the answer goes out."""

    PURGE_EVERY_S = 60.0

    def __init__(self, store, idle_s: float = 1800.0, fence=None):
        """``fence``: the owning shard's (``ecrec.profiles.fencing``), carried by every write."""
        self.store, self.idle_s, self.fence = store, idle_s, fence
        self._purged_at = 0.0

    def get(self, user_id: str, session_id: str, now: float | None = None) -> tuple[ChatSession | None, str]:
        """(session, "ok") or (None, "unknown" | "expired"). An expired session is deleted."""
        now = time.time() if now is None else now
        blob = self.store.get_chat(user_id, session_id)
        if now - self._purged_at > self.PURGE_EVERY_S:  # sweep abandoned sessions, once a minute
            self.purge(now)
        if blob is None:
            return None, "unknown"
        s = ChatSession.from_bytes(blob)
        if s.expired(now, self.idle_s):
            self.store.delete_chat(user_id, session_id, fence=self.fence)
            return None, "expired"
        return s, "ok"

    def put(self, s: ChatSession) -> None:
        self.store.put_chat(s.user_id, s.session_id, s.updated_at, s.to_bytes(), fence=self.fence)

    def purge(self, now: float | None = None) -> int:
        """Drop sessions idle past ``idle_s``; returns how many."""
        now = time.time() if now is None else now
        self._purged_at = now
        return self.store.purge_chats(now - self.idle_s, fence=self.fence)
