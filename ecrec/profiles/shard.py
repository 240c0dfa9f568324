"""One shard of user profiles: a cache in front of a durable store (event log and snapshots).

Ray-free: the Serve graph wraps it in an actor; tests drive it directly. All events of a user go
to one shard (``shard_of``), so they are applied in order by a single owner.

Profiles load lazily: a user's newest readable snapshot plus the events logged after it, on
first use. A shard that restarts (on this node or another one, with a networked store) answers at
once and never replays the whole store. Hot profiles stay in memory, least recently used first
out, within ``max_bytes``. Each is held in its stored form (``UserProfile.to_bytes``, at most
``ProfileConfig.max_bytes``) and decoded on use; a profile leaving the cache with events
since its last snapshot is snapshotted first, so loading it again is one snapshot and no replay.

One writer per shard, even when a replaced copy lives on (``ecrec.profiles.fencing``): a serving
shard takes a new epoch from the store when it starts, every write carries it, and the first
write the store refuses (a newer incarnation took over) stops this one: from then on every call
raises ``FencedError`` without touching the store, and its cache is dropped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import struct
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ecrec.chat.session import ChatSession, ChatSessions
from ecrec.profiles.events import Event, check_timestamp
from ecrec.profiles.fencing import READER_EPOCH, Fence, FencedError, stops_when_fenced
from ecrec.operations.attribution import Attribution
from ecrec.profiles.profile import CorruptProfileError, ProfileConfig, UserProfile
from ecrec.text.sentiment import Clause, Sentiment, TextAnalysis
from ecrec.profiles.store import EventStore

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


@dataclass(slots=True)
class _Cached:
    blob: bytes  # the profile in its stored form (``UserProfile.to_bytes``): ~4 KB, not ~50 KB of objects
    last_seq: int
    since_snapshot: int  # events applied since the last snapshot
    nbytes: int

    @property
    def profile(self) -> UserProfile:
        return UserProfile.from_bytes(self.blob)

    @classmethod
    def of(cls, profile: UserProfile, last_seq: int, since_snapshot: int, blob: bytes | None = None) -> "_Cached":
        return cls(profile.stored_bytes() if blob is None else blob, last_seq, since_snapshot,
                   profile.memory_bytes())


class ProfileShard:
    def __init__(self, store: EventStore, dim: int, config: ProfileConfig = ProfileConfig(),
                 snapshot_every: int = 50, secret: bytes | None = None, max_bytes: int | None = None,
                 max_absent: int = 100_000, shard_id: int = 0, serving: bool = True):
        """``secret`` keys the hashes in erasure tombstones: one per state directory (so tombstones
        stay valid when users move between shards), else the store's own. ``max_bytes`` bounds
        the profiles held in memory (None: no bound). ``shard_id``: this shard's index, whose
        epoch it takes (on Redis all shards share one key space). ``serving=False``: opened only to
        read beside the live shard (an export); it takes no epoch, so it never fences the live one."""
        # First: anything an older incarnation writes from here on is refused, so what this one loads is final.
        self.fence = Fence(shard_id, store.take_epoch(shard_id) if serving else READER_EPOCH)
        self.fenced: FencedError | None = None  # the store's first refusal: this shard has stopped
        self.store, self.dim, self.config, self.snapshot_every = store, dim, config, snapshot_every
        self.max_bytes, self.max_absent = max_bytes, max_absent
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._absent: OrderedDict[str, None] = OrderedDict()  # users the store does not know (bounded)
        self.cached_bytes = 0
        self.loads = self.evictions = 0
        self._secret = secret if secret is not None else store.secret()
        self._tombstones: dict[bytes, tuple[float, set[bytes]]] = {}
        self.corrupt_snapshots: list[str] = []  # users whose newest snapshot was refused when loaded
        self.chats = ChatSessions(store, fence=self.fence)
        self.attribution = Attribution()  # served lists and what they led to (memory only: metrics)
        self.restore()

    @property
    def profiles(self) -> dict[str, UserProfile]:
        """The profiles in memory now (not every user: see ``users``)."""
        return {u: c.profile for u, c in self._cache.items()}

    @stops_when_fenced
    def users(self):
        return self.store.users()

    def restore(self) -> int:
        """Read the erasure tombstones; profiles are loaded on first use (``_load``). Returns 0:
        nothing is replayed at start-up."""
        for key, deleted_at, event_keys in self.store.tombstones():
            self._tombstones[bytes(key)] = (deleted_at, {event_keys[i : i + 16] for i in range(0, len(event_keys), 16)})
        self._cache.clear()
        self._absent.clear()
        self.cached_bytes = 0
        return 0

    def _load(self, user_id: str, repair: bool = True) -> _Cached | None:
        """A profile from its newest readable snapshot plus the events logged after it.

        A snapshot that fails its checksum is refused loudly (logged as an error, counted in
        ``corrupt_snapshots``) and the previous snapshot, or the whole log, is used instead;
        ``repair`` also drops it from the store.
        """
        snaps, events = self.store.load_user(user_id)
        if not snaps and not events:
            return None
        self.loads += 1
        p, seq = None, 0
        for sseq, blob in snaps:
            try:
                p, seq = UserProfile.from_bytes(blob), sseq
                break
            except CorruptProfileError as e:
                log.error("user %s: snapshot at seq %d refused (%s); falling back to the one before "
                          "it or the log, and dropping it", user_id, sseq, e)
                self.corrupt_snapshots.append(user_id)
                if repair:
                    self.store.drop_snapshot(user_id, sseq, fence=self.fence)  # never a fall-back for a later snapshot
        if p is None:
            p = UserProfile(user_id, self.dim)
            if snaps:
                log.error("user %s: no readable snapshot; rebuilt from the %d logged events kept",
                          user_id, len(events))
        replayed = 0
        for s, payload in events:
            if s > seq:
                p = self._replay(p, payload)
                seq = s
                replayed += 1
        return _Cached.of(p, seq, replayed)

    def _entry(self, user_id: str) -> _Cached | None:
        c = self._cache.get(user_id)
        if c is not None:
            self._cache.move_to_end(user_id)
            return c
        if user_id in self._absent:
            self._absent.move_to_end(user_id)
            return None
        c = self._load(user_id)
        if c is None:
            self._absent[user_id] = None
            if len(self._absent) > self.max_absent:
                self._absent.popitem(last=False)
            return None
        self._put(user_id, c)
        return c

    def _put(self, user_id: str, c: _Cached) -> None:
        old = self._cache.pop(user_id, None)
        self.cached_bytes += c.nbytes - (old.nbytes if old else 0)
        self._cache[user_id] = c
        self._absent.pop(user_id, None)
        self._evict(keep=user_id)

    def _evict(self, keep: str) -> None:
        while self.max_bytes is not None and self.cached_bytes > self.max_bytes and len(self._cache) > 1:
            user_id, c = next(iter(self._cache.items()))
            if user_id == keep:
                self._cache.move_to_end(user_id)
                continue
            if c.since_snapshot:  # loading it again must not replay: snapshot what it holds
                try:
                    self.store.snapshot(user_id, c.last_seq, c.blob, fence=self.fence)
                except FencedError as e:  # stopped (the cache is dropped); the write that led here stands
                    self._fence(e)
                    return
            del self._cache[user_id]
            self.cached_bytes -= c.nbytes
            self.evictions += 1

    def stats(self) -> dict:
        """Answered even when fenced: it says so (``fenced_by``: the epoch that took over)."""
        return {"cached_profiles": len(self._cache), "cached_bytes": self.cached_bytes, "max_bytes": self.max_bytes,
                "loads": self.loads, "evictions": self.evictions, "corrupt_snapshots": len(self.corrupt_snapshots),
                "epoch": self.fence.epoch, "fenced_by": self.fenced.newest if self.fenced is not None else None}

    def _fence(self, e: FencedError) -> None:
        """A newer incarnation took over: stop, and drop every cached profile (its copies are now
        the truth; nothing here may be served or snapshotted again)."""
        if self.fenced is None:
            log.error("%s", e)
        self.fenced = e
        self._cache.clear()
        self._absent.clear()
        self.cached_bytes = 0

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

    @stops_when_fenced
    def get(self, user_id: str) -> UserProfile | None:
        c = self._entry(user_id)
        return c.profile if c is not None else None

    @stops_when_fenced
    def get_blob(self, user_id: str) -> bytes | None:
        """The profile in its stored form, not decoded (``UserProfile.from_bytes`` reads it): what
        a shard hands to another process."""
        c = self._entry(user_id)
        return c.blob if c is not None else None

    @stops_when_fenced
    def peek(self, user_id: str) -> UserProfile | None:
        """The profile as the store holds it, read without caching it or writing anything (an
        export beside the live shard: no snapshot on eviction, no repair of a corrupt one)."""
        c = self._cache.get(user_id) or self._load(user_id, repair=False)
        return c.profile if c is not None else None

    # ---- erasure tombstones: keyed hashes, so they hold no personal data ------------------
    def _user_key(self, user_id: str) -> bytes:
        return hashlib.blake2b(user_id.encode("utf-8"), key=self._secret, digest_size=16, person=b"user").digest()

    def _event_key(self, user_id: str, event_id: str) -> bytes:
        return hashlib.blake2b(f"{user_id}\x00{event_id}".encode("utf-8"), key=self._secret, digest_size=16,
                               person=b"event").digest()

    def erased(self, event: Event) -> bool:
        """An event from before its user's erasure, or a retry of an event erased with them."""
        stone = self._tombstones.get(self._user_key(event.user_id))
        if stone is None:
            return False
        deleted_at, keys = stone
        return event.ts <= deleted_at or (event.event_id is not None
                                          and self._event_key(event.user_id, event.event_id) in keys)

    def apply(self, event: Event, item_vec: np.ndarray | None, analysis: TextAnalysis | None) -> tuple[int, bool]:
        """Apply and durably log one event. Returns (profile version, applied). A repeated
        ``event_id``, or an event of an erased user from before the erasure, is acknowledged
        without being applied."""
        version, applied, _, _ = self.apply_event(event, item_vec, analysis)
        return version, applied

    @stops_when_fenced
    def apply_event(self, event: Event, item_vec: np.ndarray | None,
                    analysis: TextAnalysis | None) -> tuple[int, bool, list[str], list[str]]:
        """``apply``, also returning the profile's ``recent`` items before and after (co-visits)."""
        check_timestamp(event.ts, time.time(), self.config.max_future_skew_s)
        old = self.get(event.user_id) or UserProfile(event.user_id, self.dim)
        new = old.apply(event, item_vec, analysis, self.config)  # validates; raises before any write
        if self.erased(event):
            return old.version, False, old.recent, old.recent
        event_id = event.event_id or uuid.uuid4().hex
        body, vecs = analysis_to_body(analysis)
        if item_vec is not None:
            vecs = [np.asarray(item_vec, np.float32), *vecs]
        payload = encode_payload("event", {"e": event.model_dump(mode="json"), "item": item_vec is not None,
                                           "dim": self.dim, **body}, vecs)
        head = new.stored_bytes()  # logged with the event: readers of the store see the profile after it
        try:
            seq = self.store.append(event.user_id, event_id, payload, head, fence=self.fence)
        except Exception:
            # The write may have landed (a reply lost to a timeout): forget the cached profile so the
            # next access reloads it from the store, instead of a retry finding the id seen and the
            # cache never learning the event.
            self._forget(event.user_id)
            raise
        if seq is None:
            return old.version, False, old.recent, old.recent
        self._after_write(event.user_id, new, seq, head)
        return new.version, True, old.recent, new.recent

    def record_impressions(self, user_id: str, item_ids: list[str], now: float) -> bool:
        return self.record_impressions_many([(user_id, item_ids, now)]) == 1

    @stops_when_fenced
    def record_impressions_many(self, batch: list[tuple[str, list[str], float]]) -> int:
        """Count items as shown, all of ``batch`` in one transaction. Users without a profile are
        skipped: a cold user's list is popular items anyway, and a late impression must never
        resurrect an erased user. Returns how many lists were recorded."""
        rows, updates, pending = [], [], {}
        for user_id, item_ids, now in batch:
            p = pending.get(user_id) or self.get(user_id)
            if p is None:
                continue
            pending[user_id] = p.record_impressions(item_ids, now, self.config)
            updates.append((user_id, pending[user_id], pending[user_id].stored_bytes()))
            rows.append((user_id, encode_payload("impressions", {"items": list(item_ids), "now": now,
                                                                 "dim": self.dim}, [])))
        try:
            seqs = self.store.append_many(rows, [blob for _, _, blob in updates], fence=self.fence)
        except Exception:
            for user_id, _, _ in updates:  # as in ``apply``: the store is the truth when unsure
                self._forget(user_id)
            raise
        for (user_id, p, blob), seq in zip(updates, seqs):
            self._after_write(user_id, p, seq, blob)
        return len(seqs)

    @stops_when_fenced
    def served_many(self, lists: list[tuple]) -> int:
        """Lists shown: each ``(request_id, user_id or None, [(item id, source)], ts, arm,
        model_version, cold, impressions)`` enters the attribution ledger; where ``impressions``
        is true its items also count as impressions of its user, if the user has a profile
        (``record_impressions_many``). Returns how many lists recorded impressions."""
        for request_id, user_id, items, ts, arm, model_version, cold, _ in lists:
            self.attribution.served(request_id, user_id, items, ts, arm, model_version, cold)
        shown = [(user_id, [i for i, _ in items], ts) for _, user_id, items, ts, *_, imp in lists if imp and user_id]
        return self.record_impressions_many(shown) if shown else 0

    def attribute(self, request_id: str | None, event: Event, analysis: TextAnalysis | None = None) -> dict | None:
        """Count an applied event in the online metrics; where it names the list it came from,
        attribute it there (``Attribution.event``). Not fenced: it only counts, in memory, an event
        this incarnation has stored; refusing it after a takeover fenced the snapshot that followed
        the stored event would answer "not applied" for an applied event, and a retry without an
        event_id would apply it twice."""
        if analysis is not None:
            self.attribution.text(analysis.sentiment.label, event.ts)
        if request_id is None:
            return None
        return self.attribution.event(request_id, event.user_id, event.item_id, event.type, event.ts)

    def _after_write(self, user_id: str, profile: UserProfile, seq: int, blob: bytes) -> None:
        """The event is in the log (with ``blob``, the profile after it): the cache takes it first,
        then a snapshot may follow. A failed snapshot loses nothing (the log holds the event) and
        is tried again at the next write."""
        old = self._cache.get(user_id)
        since = (old.since_snapshot if old is not None else 0) + 1
        entry = _Cached.of(profile, seq, since, blob)
        self._put(user_id, entry)
        if since >= self.snapshot_every and self.fenced is None:
            try:
                self.store.snapshot(user_id, seq, entry.blob, fence=self.fence)
                entry.since_snapshot = 0
            except FencedError as e:  # taken over since the write: that write stands (logged before), then stop
                self._fence(e)
            except Exception:
                log.exception("user %s: snapshot at seq %d failed; the log keeps the events", user_id, seq)

    def _forget(self, user_id: str) -> None:
        c = self._cache.pop(user_id, None)
        if c is not None:
            self.cached_bytes -= c.nbytes
        self._absent.pop(user_id, None)

    @stops_when_fenced
    def delete(self, user_id: str, now: float | None = None) -> bool:
        """Erase a user, leaving a tombstone (keyed hashes of the id and its event ids, and the
        time): events from before it, and retries of erased event ids, are never applied again."""
        existed = self.get(user_id) is not None
        now = time.time() if now is None else now
        key = self._user_key(user_id)
        keys = set(self._tombstones.get(key, (0.0, set()))[1])

        def tombstone(event_ids):
            keys.update(self._event_key(user_id, e) for e in event_ids)
            return key, now, b"".join(sorted(keys))

        self._forget(user_id)  # first: even if the store's reply is lost, no cached copy comes back
        self.attribution.forget(user_id)
        self.store.delete_user(user_id, tombstone, fence=self.fence)  # rows and tombstone: one transaction
        self._tombstones[key] = (now, keys)
        self._absent[user_id] = None
        return existed

    @stops_when_fenced
    def chat_get(self, user_id: str, session_id: str, idle_s: float | None = None):
        """``ChatSessions.get`` (expired sessions deleted, idle ones swept) through this shard, so
        a fenced shard answers ``FencedError`` here too."""
        if idle_s is not None:
            self.chats.idle_s = idle_s
        return self.chats.get(user_id, session_id)

    @stops_when_fenced
    def chat_commit(self, session: ChatSession, expected_turns: int, event: Event | None = None,
                    analysis: TextAnalysis | None = None) -> tuple[bool, int | None]:
        """Store a chat turn's new state (and apply its profile event first), unless another turn
        of the session was stored since this one read it: (stored?, profile version or None)."""
        stored = self.store.get_chat(session.user_id, session.session_id)
        have = ChatSession.from_bytes(stored).turns if stored is not None else 0
        if have != expected_turns:
            return False, None
        version = self.apply(event, None, analysis)[0] if event is not None else None
        stone = self._tombstones.get(self._user_key(session.user_id))
        if stone is not None and stone[0] >= session.created_at:
            return True, version  # the user was erased while this turn was answered: not kept
        self.chats.put(session)
        return True, version
