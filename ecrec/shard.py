"""One shard of user profiles: in-memory state, durable event log, snapshots, restore.

Ray-free: the Serve graph wraps it in an actor; tests drive it directly. All events of a user go
to one shard (``shard_of``), so they are applied in order by a single owner.
"""
from __future__ import annotations

import hashlib
import json
import logging
import struct
import uuid

import numpy as np

from ecrec.events import Event
from ecrec.profile import ProfileConfig, UserProfile
from ecrec.sentiment import Clause, Sentiment, TextAnalysis
from ecrec.store import EventStore

log = logging.getLogger(__name__)


def shard_of(user_id: str, n_shards: int) -> int:
    """Stable across processes and versions (blake2b, never Python's salted ``hash``)."""
    digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_shards


def encode_payload(kind: str, body: dict, vectors: list[np.ndarray]) -> bytes:
    head = json.dumps({"k": kind, **body}, ensure_ascii=False, separators=(",", ":")).encode()
    vec = np.stack(vectors).astype(np.float32).tobytes() if vectors else b""
    return struct.pack("<I", len(head)) + head + vec


def decode_payload(data: bytes) -> tuple[dict, np.ndarray]:
    (n,) = struct.unpack_from("<I", data, 0)
    head = json.loads(data[4 : 4 + n])
    return head, np.frombuffer(data[4 + n :], dtype=np.float32).reshape(-1, head.get("dim", 1))


def analysis_to_body(a: TextAnalysis | None) -> tuple[dict, list[np.ndarray]]:
    if a is None:
        return {}, []
    body = {"a": {"text": a.text, "lang": a.language, "trunc": a.truncated, "probs": a.sentiment.probs,
                  "label": a.sentiment.label,
                  "clauses": [[c.text, c.sentiment.label, c.sentiment.probs] for c in a.clauses]}}
    return body, [a.vector, *(c.vector for c in a.clauses)]


def analysis_from_body(body: dict, vecs: np.ndarray) -> TextAnalysis:
    a = body["a"]
    clauses = [Clause(t, Sentiment(lab, probs), vecs[1 + i].copy()) for i, (t, lab, probs) in enumerate(a["clauses"])]
    return TextAnalysis(a["text"], a["lang"], a["trunc"], Sentiment(a["label"], a["probs"]), vecs[0].copy(), clauses)


class ProfileShard:
    def __init__(self, store: EventStore, dim: int, config: ProfileConfig = ProfileConfig(),
                 snapshot_every: int = 50):
        self.store, self.dim, self.config, self.snapshot_every = store, dim, config, snapshot_every
        self.profiles: dict[str, UserProfile] = {}
        self._since_snapshot: dict[str, int] = {}
        self._last_seq: dict[str, int] = {}
        self.restore()

    def restore(self) -> int:
        """Rebuild every profile from its snapshot plus the events logged after it."""
        n = 0
        for user_id, blob, seq, events in self.store.load():
            p = UserProfile.from_bytes(blob) if blob else UserProfile(user_id, self.dim)
            for s, payload in events:
                p = self._replay(p, payload)
                seq = s
                n += 1
            self.profiles[user_id] = p
            self._last_seq[user_id] = seq
            self._since_snapshot[user_id] = len(events)
        log.info("restored %d profiles (%d events replayed)", len(self.profiles), n)
        return n

    def _replay(self, p: UserProfile, payload: bytes) -> UserProfile:
        head, vecs = decode_payload(payload)
        if head["k"] == "impressions":
            return p.record_impressions(head["items"], head["now"], self.config)
        event = Event(**head["e"])
        i = 0
        item_vec = None
        if head.get("item"):
            item_vec, i = vecs[0], 1
        analysis = analysis_from_body(head, vecs[i:]) if "a" in head else None
        return p.apply(event, item_vec, analysis, self.config)

    def get(self, user_id: str) -> UserProfile | None:
        return self.profiles.get(user_id)

    def apply(self, event: Event, item_vec: np.ndarray | None, analysis: TextAnalysis | None) -> tuple[int, bool]:
        """Apply and durably log one event. Returns (profile version, applied). A repeated
        ``event_id`` is acknowledged again without being applied twice."""
        old = self.profiles.get(event.user_id) or UserProfile(event.user_id, self.dim)
        new = old.apply(event, item_vec, analysis, self.config)  # validates; raises before any write
        event_id = event.event_id or uuid.uuid4().hex
        body, vecs = analysis_to_body(analysis)
        if item_vec is not None:
            vecs = [np.asarray(item_vec, np.float32), *vecs]
        payload = encode_payload("event", {"e": event.model_dump(mode="json"), "item": item_vec is not None,
                                           "dim": self.dim, **body}, vecs)
        seq = self.store.append(event.user_id, event_id, payload)
        if seq is None:
            return old.version, False
        self.profiles[event.user_id] = new
        self._after_write(event.user_id, seq)
        return new.version, True

    def record_impressions(self, user_id: str, item_ids: list[str], now: float) -> bool:
        """Count items as shown. Users without a profile are skipped: a cold user's list is
        popular items anyway, and a late impression must never resurrect an erased user."""
        if user_id not in self.profiles:
            return False
        new = self.profiles[user_id].record_impressions(item_ids, now, self.config)
        payload = encode_payload("impressions", {"items": list(item_ids), "now": now, "dim": self.dim}, [])
        seq = self.store.append(user_id, uuid.uuid4().hex, payload)
        self.profiles[user_id] = new
        self._after_write(user_id, seq)
        return True

    def _after_write(self, user_id: str, seq: int) -> None:
        self._last_seq[user_id] = seq
        self._since_snapshot[user_id] = self._since_snapshot.get(user_id, 0) + 1
        if self._since_snapshot[user_id] >= self.snapshot_every:
            self.store.snapshot(user_id, seq, self.profiles[user_id].to_bytes())
            self._since_snapshot[user_id] = 0

    def delete(self, user_id: str) -> bool:
        existed = user_id in self.profiles
        self.store.delete_user(user_id)
        self.profiles.pop(user_id, None)
        self._since_snapshot.pop(user_id, None)
        self._last_seq.pop(user_id, None)
        return existed
