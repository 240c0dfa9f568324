"""Live user profiles: interest vectors moved by events and by what the shopper wrote.

Update rules (weights in ``ProfileConfig``):
- Every signal is a (unit vector, weight). Positive weights accumulate into a long-term interest,
  a short-term session interest and the nearest of a few interest centroids; negative weights
  accumulate into a separate "avoid" vector. Retrieval scores items by
  ``cos(item, interest) - avoid_weight * cos(item, avoid)``, which is linear, so one FAISS
  inner-product search serves it.
- Item events weigh view < click < cart < purchase; dislike is a strong negative.
- Text is split into clauses; each clause's weight is its sentiment polarity
  p(positive) - p(negative) (plus a little for neutral mentions): "拍照效果很好" pulls toward
  camera items, "但电池续航不太理想" pushes away from battery items. Questions and searches
  state what the shopper wants, so they pull unless clearly negative.
- A review's stars (and its text polarity) steer the reviewed item's own contribution.
- Everything decays with a half-life: long-term in days, session in minutes.
``apply`` never mutates: it returns a new profile, so a failed update leaves the old one intact.
The profile it returns is already in its stored form (``ecrec.profiles.profile_codec``: int8 vectors, a
byte budget), so the cache and the store always hold the same profile.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from ecrec.profiles.events import CLICK_TYPES, ITEM_EVENTS, Event

from ecrec.profiles import profile_codec as codec

MAGIC = codec.MAGIC  # ECP3: + crc32, int8 rows, item table (``ecrec.profiles.profile_codec``)
V2_MAGIC = b"ECP2"  # + crc32, JSON header, scaled float16 rows: still readable
LEGACY_MAGIC = b"ECP1"  # unscaled float16 rows, no checksum: still readable


class CorruptProfileError(ValueError):
    """A stored profile snapshot that cannot be trusted (checksum, format or non-finite values)."""
RATING_WEIGHT = {1: -1.0, 2: -0.6, 3: 0.1, 4: 0.6, 5: 1.0}


@dataclass(frozen=True)
class ProfileConfig:
    long_half_life_s: float = field(default=14 * 86400.0, metadata={"help": "long-term decay"})
    session_half_life_s: float = field(default=1800.0, metadata={"help": "session decay"})
    impression_half_life_s: float = field(default=86400.0, metadata={"help": "fatigue decay"})
    view: float = 0.2
    click: float = 0.5
    cart: float = 1.0
    purchase: float = 1.5
    dislike: float = -2.0
    review_text: float = 1.2
    feedback_text: float = 1.0
    question_text: float = 0.8
    search_text: float = 1.0
    neutral: float = 0.1  # weight of a neutral clause, per unit p(neutral)
    max_interests: int = 3
    interest_split_cos: float = 0.86  # e5 cosines sit in ~0.7..1: below this a signal starts a new interest
    max_items: int = 200  # bound on seen / purchased / disliked / impressions
    max_reasons: int = field(default=4, metadata={"help": "recent items and clauses kept to explain"})
    max_text_reasons: int = field(default=2, metadata={"help": "positive clauses kept besides, to explain"})
    max_sequence: int = field(default=30, metadata={"help": "recent items kept for the sequence retriever"})
    max_bytes: int = field(default=3700, metadata={"help": "a stored profile's budget (the cache adds ~300 bytes: 4 KB in memory)"})
    max_future_skew_s: float = field(default=300.0, metadata={"help": "events stamped later than now + this are refused"})

    def item_weight(self, event_type: str) -> float:
        return getattr(self, event_type) if event_type in ITEM_EVENTS else 0.0

    def interaction(self, event_type: str) -> tuple[float, bool]:
        """What an item event adds to the item's counters: (its weight, whether it counts as a
        click). The one place the in-process engine and the Serve graph read both from."""
        return self.item_weight(event_type), event_type in CLICK_TYPES


@dataclass
class Reason:
    kind: str  # "text" or "item"
    label: str  # clause text or item id
    weight: float
    ts: float
    vector: np.ndarray | None  # (dim,) a positive clause's: the direction of the interest it fed; an item's is the index's
    interest: int | None = None  # which interest a positive clause fed


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _bounded_put(d: dict, key, value, limit: int) -> None:
    d.pop(key, None)
    d[key] = value
    while len(d) > limit:
        d.pop(next(iter(d)))


@dataclass
class UserProfile:
    user_id: str
    dim: int
    session: np.ndarray = None
    avoid: np.ndarray = None
    interests: np.ndarray = None  # (m, dim) centroid sums
    interest_ts: list = field(default_factory=list)  # last update of each centroid
    updated_at: float = 0.0
    session_at: float = 0.0
    version: int = 0
    seen: dict = field(default_factory=dict)  # item -> ts (ordered, bounded)
    purchased: dict = field(default_factory=dict)
    disliked: dict = field(default_factory=dict)
    impressions: dict = field(default_factory=dict)  # item -> [decayed count, ts]
    recent_positive: dict = field(default_factory=dict)  # item -> weight
    reasons: list = field(default_factory=list)
    recent: list = field(default_factory=list)  # item ids, oldest first: the sequence retriever's input
    # items that left the item table under the byte budget, as 32-bit keys (``profile_codec``):
    # still known as seen / bought, so they stay out of the lists
    seen_keys: dict = field(default_factory=dict)  # key -> None, oldest first
    bought_keys: dict = field(default_factory=dict)
    disliked_keys: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("session", "avoid"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.dim, np.float32))
        if self.interests is None:
            self.interests = np.zeros((0, self.dim), np.float32)

    def __reduce__(self):
        """Pickled (between Ray processes) in the compact stored form: ~4 KB."""
        return type(self).from_bytes, (self.to_bytes(),)

    def has_seen(self, item_id: str) -> bool:
        return item_id in self.seen or (bool(self.seen_keys) and codec.item_key(item_id) in self.seen_keys)

    def has_bought(self, item_id: str) -> bool:
        return item_id in self.purchased or (bool(self.bought_keys)
                                             and codec.item_key(item_id) in self.bought_keys)

    def __deepcopy__(self, memo) -> "UserProfile":
        return dataclasses.replace(
            self, session=self.session.copy(), avoid=self.avoid.copy(), interests=self.interests.copy(),
            interest_ts=list(self.interest_ts), seen=dict(self.seen), purchased=dict(self.purchased),
            disliked=dict(self.disliked), impressions={k: list(v) for k, v in self.impressions.items()},
            recent_positive=dict(self.recent_positive), reasons=list(self.reasons), recent=list(self.recent),
            seen_keys=dict(self.seen_keys), bought_keys=dict(self.bought_keys),
            disliked_keys=dict(self.disliked_keys))

    @property
    def long(self) -> np.ndarray:
        """(dim,) the weighted sum of positive signals: the sum of the interest centroids."""
        return self.interests.sum(axis=0) if len(self.interests) else np.zeros(self.dim, np.float32)

    @property
    def is_cold(self) -> bool:
        return not (np.any(self.long) or np.any(self.session))

    # ---- reading -------------------------------------------------------------------------
    def interest_vector(self, now: float, config: ProfileConfig = ProfileConfig(),
                        session_share: float = 0.4) -> np.ndarray:
        """Unit blend of long-term and (decayed) session interest; zeros when cold."""
        s = self.session * 0.5 ** (max(0.0, now - self.session_at) / config.session_half_life_s)
        v = (1 - session_share) * _unit(self.long) + session_share * _unit(s)
        return _unit(v).astype(np.float32)

    def avoid_vector(self) -> np.ndarray:
        return _unit(self.avoid).astype(np.float32)

    def interest_centroids(self) -> list[np.ndarray]:
        return [_unit(c).astype(np.float32) for c in self.interests]

    def impression_count(self, item_id: str, now: float, config: ProfileConfig = ProfileConfig()) -> float:
        hit = self.impressions.get(codec.item_key(item_id))
        if hit is None:
            return 0.0
        count, ts = hit
        return count * 0.5 ** (max(0.0, now - ts) / config.impression_half_life_s)

    def impression_counts(self, item_ids, now: float, config: ProfileConfig = ProfileConfig()) -> np.ndarray:
        """``impression_count`` of each item, as an array (one loop, for ranking's candidates)."""
        out = np.zeros(len(item_ids))
        shown = self.impressions
        if not shown:
            return out
        key, half = codec.item_key, config.impression_half_life_s
        for j, i in enumerate(item_ids):
            hit = shown.get(key(i))
            if hit is not None:
                count, ts = hit
                out[j] = count * 0.5 ** (max(0.0, now - ts) / half)
        return out

    # ---- writing -------------------------------------------------------------------------
    def apply(self, event: Event, item_vector: np.ndarray | None = None, analysis=None,
              config: ProfileConfig = ProfileConfig()) -> "UserProfile":
        """Return the profile after ``event``. ``item_vector`` is the event item's unit vector,
        ``analysis`` the event text's ``TextAnalysis`` (clauses with sentiment)."""
        if event.user_id != self.user_id:
            raise ValueError(f"event for {event.user_id!r} applied to profile {self.user_id!r}")
        signals = self._signals(event, item_vector, analysis, config)
        new = copy.deepcopy(self)
        new._decay_to(event.ts, config)
        late = 0.5 ** (max(0.0, new.updated_at - event.ts) / config.long_half_life_s)
        for vec, w, reason in signals:
            fed = new._add(vec, w * late, config, event.ts)
            if reason is not None and abs(w) > 0.05:
                keep = reason[0] == "text" and w > 0.1  # what an explanation can pick (items: the index's)
                new.reasons.append(Reason(reason[0], reason[1], float(w), event.ts, vec.copy() if keep else None,
                                          fed if keep else None))
        new._book(event, signals, config)
        new.updated_at = max(new.updated_at, event.ts)
        new.version += 1
        return new._stored(config)

    def _stored(self, config: ProfileConfig) -> "UserProfile":
        """Bound the reasons, fit the byte budget, and come back as the store will hold it."""
        said = [r for r in self.reasons if r.interest is not None][-config.max_text_reasons:]
        rest = [r for r in self.reasons if r.interest is None][-config.max_reasons:]
        keep = {id(r) for r in said + rest}
        self.reasons = [r for r in self.reasons if id(r) in keep]
        codec.fit(self, config.max_bytes)
        return UserProfile.from_bytes(self.to_bytes())

    def stored_bytes(self) -> bytes:
        """``to_bytes``, without encoding again for a profile decoded from its stored form (as
        ``apply`` and ``record_impressions`` return them; profiles are not changed in place)."""
        return self.__dict__.get("_stored_blob") or self.to_bytes()

    def _signals(self, event: Event, item_vector, analysis, config: ProfileConfig):
        from ecrec.retrieval.index import check_vectors

        out = []
        if event.item_id is not None and item_vector is None:
            raise ValueError(f"{event.type} event for item {event.item_id!r} needs its vector")
        if event.text is not None and analysis is None:
            raise ValueError(f"{event.type} event with text needs its analysis")
        if item_vector is not None:
            v = check_vectors(item_vector, self.dim, "item vector")[0]
            w = config.item_weight(event.type)
            if event.type in ("review", "feedback"):
                parts = [RATING_WEIGHT[event.rating]] if event.rating else []
                if analysis is not None:
                    parts.append(analysis.sentiment.polarity)
                w = float(np.mean(parts)) if parts else 0.0
            out.append((v, w, ("item", event.item_id)))
        if analysis is not None:
            base = getattr(config, f"{event.type}_text", config.review_text)
            for clause in analysis.clauses:
                v = check_vectors(clause.vector, self.dim, "clause vector")[0]
                p = clause.sentiment.probs
                if event.type in ("question", "search"):
                    # what they ask for is what they want, unless the wording is clearly negative
                    w = base * (1.0 - 2.0 * max(0.0, p["negative"] - p["positive"]))
                else:
                    w = base * (p["positive"] - p["negative"]) + config.neutral * p["neutral"]
                out.append((v, w, ("text", clause.text)))
        return out

    def _decay_to(self, ts: float, config: ProfileConfig) -> None:
        if ts > self.updated_at and self.version > 0:
            f = 0.5 ** ((ts - self.updated_at) / config.long_half_life_s)
            self.avoid *= f
            self.interests *= f
        if ts > self.session_at:
            self.session *= 0.5 ** ((ts - self.session_at) / config.session_half_life_s)
            self.session_at = ts

    def _add(self, v: np.ndarray, w: float, config: ProfileConfig, ts: float) -> int | None:
        """Add one signal; returns the interest it went into (None: into avoid)."""
        if w < 0:
            self.avoid += (-w) * v
            return None
        self.session += w * v
        if len(self.interests):
            cos = (self.interests @ v) / np.maximum(np.linalg.norm(self.interests, axis=1), 1e-9)
            best = int(cos.argmax())
            if cos[best] >= config.interest_split_cos or len(self.interests) >= config.max_interests:
                self.interests[best] += w * v
                self.interest_ts[best] = max(self.interest_ts[best], ts)
                return best
        self.interests = np.vstack([self.interests, (w * v)[None, :]]).astype(np.float32)
        self.interest_ts.append(ts)
        return len(self.interests) - 1

    def _book(self, event: Event, signals, config: ProfileConfig) -> None:
        item = event.item_id
        if item is None:
            return
        lim = config.max_items
        if event.type in ("view", "click", "cart", "purchase", "review"):
            _bounded_put(self.seen, item, event.ts, lim)
            self.seen_keys.pop(codec.item_key(item), None)  # back in the table
        if event.type == "purchase":
            _bounded_put(self.purchased, item, event.ts, lim)
            self.bought_keys.pop(codec.item_key(item), None)
        if event.type == "dislike":
            _bounded_put(self.disliked, item, event.ts, lim)
            self.disliked_keys.pop(codec.item_key(item), None)
            self.recent_positive.pop(item, None)
        w = signals[0][1] if signals else 0.0
        if w > 0 and event.type != "view":
            _bounded_put(self.recent_positive, item, float(w), 10)
            self.recent = ([i for i in self.recent if i != item] + [item])[-config.max_sequence:]
        elif w < 0:
            self.recent_positive.pop(item, None)
            self.recent = [i for i in self.recent if i != item]

    def record_impressions(self, item_ids, now: float, config: ProfileConfig = ProfileConfig()) -> "UserProfile":
        new = copy.deepcopy(self)
        for i in item_ids:
            _bounded_put(new.impressions, codec.item_key(i), [self.impression_count(i, now, config) + 1.0, now],
                         config.max_items)
        return new._stored(config)

    def memory_bytes(self) -> int:
        """What a shard's cache holds for this profile: its stored bytes plus the cache entry."""
        return len(self.stored_bytes()) + CACHE_ENTRY_BYTES + len(self.user_id)

    # ---- storage -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The compact form (``ecrec.profiles.profile_codec``), checksummed."""
        return codec.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> "UserProfile":
        """Reads ECP3 and the older ECP2 / ECP1. Raises ``CorruptProfileError`` for bytes that fail
        their checksum or hold non-finite values."""
        data = bytes(data)
        if data[:4] == MAGIC and len(data) >= 8:
            if zlib.crc32(data[8:]) != struct.unpack_from("<I", data, 4)[0]:
                raise CorruptProfileError("profile snapshot fails its checksum")
            try:
                p = codec.decode(data, cls, Reason)
            except (ValueError, IndexError, UnicodeDecodeError, struct.error) as e:
                raise CorruptProfileError(f"unreadable profile snapshot: {e}") from e
            if not (np.isfinite(p.session).all() and np.isfinite(p.avoid).all() and np.isfinite(p.interests).all()):
                raise CorruptProfileError("profile snapshot holds non-finite values")
            p._stored_blob = data  # a fixed point: encoding p gives these bytes again
            return p
        return cls._from_v2(data)

    @classmethod
    def _from_v2(cls, data: bytes) -> "UserProfile":
        """ECP2 / ECP1 snapshots, as written before the compact format: loaded, then fitted to it."""
        if data[:4] == LEGACY_MAGIC:
            body, scaled = data[4:], False
        elif data[:4] == V2_MAGIC and len(data) >= 8:
            (crc,) = struct.unpack_from("<I", data, 4)
            body, scaled = data[8:], True
            if zlib.crc32(body) != crc:
                raise CorruptProfileError("profile snapshot fails its checksum")
        else:
            raise CorruptProfileError("not a serialised UserProfile")
        try:
            (n,) = struct.unpack_from("<I", body, 0)
            h = json.loads(body[4 : 4 + n])
            d, m = h["d"], h["m"]
            x = np.frombuffer(body[4 + n :], dtype=np.float16).reshape(-1, d).astype(np.float32)
            if scaled:
                x = x * np.asarray(h["sc"], np.float32)[:, None]
        except (ValueError, KeyError, struct.error) as e:
            raise CorruptProfileError(f"unreadable profile snapshot: {e}") from e
        if not np.isfinite(x).all():
            raise CorruptProfileError("profile snapshot holds non-finite values")
        norms = np.maximum(np.linalg.norm(x[3 : 3 + m], axis=1), 1e-9)
        reasons = [Reason(k, lab, w, ts, None, int(np.argmax(x[3 : 3 + m] @ x[3 + m + i] / norms))
                          if k == "text" and w > 0.1 and m else None)
                   for i, (k, lab, w, ts) in enumerate(h["r"])]
        imp = {codec.item_key(i): v for i, v in h["imp"].items()}
        p = cls(h["u"], d, x[1].copy(), x[2].copy(), x[3 : 3 + m].copy(), h["its"], h["t"], h["st"], h["v"],
                h["seen"], h["pur"], h["dis"], imp, h["rp"], reasons, h.get("rs", []))
        try:
            return p._stored(ProfileConfig())
        except ValueError as e:
            raise CorruptProfileError(f"old profile snapshot cannot be converted: {e}") from e


CACHE_ENTRY_BYTES = 280  # a shard's cache entry besides the bytes and the id: key, record, bytes object (measured ~290)
