"""The compact profile format (ECP3): a profile in at most ``ProfileConfig.max_bytes``.

Layout (little-endian), after ``ECP3`` and a crc32 of the body:
- header: dim, counts, version, updated_at, session_at; the user id; each interest's last update;
- vectors as int8 rows with a float32 max-abs scale each: session, avoid, the interests. These
  are sums that every event rewrites, so they are rounded stochastically (unbiased, seeded by user
  and version, so a replay rounds alike): simulated on the demo catalog's vectors, a shopper's
  top 10 by the int8 sum kept 0.95 / 0.97 / 0.91 of the exact sum's top 10 after 100 / 300 /
  1,000 events, against 0.91 / 0.84 / 0.76 with round-to-nearest. The long-term interest is not
  stored: it is the sum of the interests (every positive signal goes into both, and both decay alike);
- the item table: each item the shopper touched once (id, flags seen / bought / disliked, last
  time, the weight it entered ``recent`` with), and ``recent`` as indices into it;
- impressions keyed by a 32-bit hash of the item id (what fatigue needs: a count and a time;
  a collision only tires one more item a little);
- reasons: text (its clause and the interest it fed, whose direction explains it) or item (an
  index into the table; its vector is the index's).

``fit`` drops what matters least until the profile fits its budget: impressions older than the
newest 20, then items only seen, then the oldest of the other items (bought, disliked, in
``recent``) except the newest 10 of ``recent`` and 16 bought and disliked. An item that leaves the
table while seen, bought or disliked is still known by a 32-bit key (4 bytes instead of ~20), so
it stays out of the lists; those keys go next (beyond the newest 60 seen, 40 bought and 40
disliked), then the newest impressions, the other seen keys, the protected items, and the last
bought and disliked keys. A profile is kept in its encodable state (``normalise``), so an encode and a
decode give back the same profile, bit for bit, whether it comes from the cache or the store.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

MAGIC = b"ECP3"
SEEN, BOUGHT, DISLIKED = 1, 2, 4
RECENT_WEIGHTS = 10  # recent_positive: the newest of ``recent`` with their weights
LABEL_BYTES = 60  # a text reason keeps this much of its clause
KEEP_IMPRESSIONS, KEEP_RECENT, KEEP_BOUGHT = 20, 10, 16  # dropped last, when the budget is tight
_HEAD = struct.Struct("<HBBHBHHHHIdd")  # dim, m, reasons, rows, recent, impressions, keys (seen, bought, disliked), version, t, st
# Columns, each a numpy array: rows (id length u16, ids, flags u8, time u32, weight f16), recent
# (u8 row indices), impressions (key u32, count f16, time u32), reasons (kind u8, ref u8, weight f16,
# time u32, label length u8, labels).
IMP_BYTES, ROW_FIXED, REASON_FIXED = 4 + 2 + 4, 2 + 1 + 4 + 2, 1 + 1 + 2 + 4 + 1
F16_MAX = 65000.0
MAX_ROWS = 255  # recent and item reasons point into the table with one byte
KEY_BYTES, MAX_SEEN_KEYS, MAX_BOUGHT_KEYS, MAX_DISLIKED_KEYS = 4, 200, 100, 100  # items out of the table, as 32-bit keys
KEEP_SEEN_KEYS, KEEP_BOUGHT_KEYS = 60, 40  # kept before the newest impressions


def item_key(item_id: str) -> int:
    """An item's 32-bit key: for impressions, and for items that left the item table."""
    return zlib.crc32(item_id.encode("utf-8"))


def quantise(x: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows to int8 codes and float32 max-abs scales, rounded to nearest or, with ``rng``,
    stochastically. Values already on the grid stay put: ``dequantise(quantise(x))`` is a fixed point."""
    x = np.asarray(x, np.float32)
    s = np.abs(x).max(axis=1) if len(x) else np.zeros(0, np.float32)
    safe = np.where(s > 0, s, 1.0).astype(np.float32)
    y = x / safe[:, None] * np.float32(127.0)
    q = np.rint(y)
    if rng is not None:
        off = np.abs(y - q) > 1e-3  # on the grid (a decoded profile): keep, else round up with p = frac
        f = np.floor(y)
        q = np.where(off, f + (rng.random(y.shape, dtype=np.float32) < (y - f)), q)
    return np.clip(q, -127, 127).astype(np.int8), s.astype(np.float32)


def dequantise(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) / np.float32(127.0)) * s[:, None]


def _label(text: str) -> bytes:
    b = text.encode("utf-8")[:LABEL_BYTES]
    return b.decode("utf-8", "ignore").encode("utf-8")  # never half a character


def _u32(ts) -> np.ndarray:
    return np.clip(np.rint(np.asarray(ts, np.float64)), 0, 0xFFFFFFFF).astype("<u4")


def _f16(x) -> np.ndarray:
    return np.clip(np.asarray(x, np.float64), -F16_MAX, F16_MAX).astype("<f2")


def _rows(p) -> list[str]:
    """The item table's ids, oldest interaction first."""
    ids = dict.fromkeys(p.seen)
    ids.update(dict.fromkeys(p.purchased))
    ids.update(dict.fromkeys(p.disliked))
    ids.update(dict.fromkeys(p.recent))
    return list(ids)


def _row_times(p, rows: list[str]) -> list[float]:
    """Each row's time: its latest of seen, bought, disliked (an item only in ``recent``, from an
    older format: the profile's time)."""
    out = dict.fromkeys(rows, 0.0)
    for i in p.recent:
        out[i] = p.updated_at
    for i, t in p.seen.items():
        out[i] = t
    for d in (p.purchased, p.disliked):
        for i, t in d.items():
            if t > out[i]:
                out[i] = t
    return [out[i] for i in rows]


def encode(p) -> bytes:
    rows = _rows(p)
    n = len(rows)
    at = {i: k for k, i in enumerate(rows)}
    vecs = np.stack([p.session, p.avoid, *p.interests]).astype(np.float32)
    if not np.isfinite(vecs).all():
        raise ValueError(f"profile {p.user_id!r} holds non-finite values; refusing to store it")
    uid = p.user_id.encode("utf-8")
    q, s = quantise(vecs, np.random.default_rng((zlib.crc32(uid), p.version)))
    reasons = [r for r in p.reasons if r.kind == "text" or r.label in at]
    if (n > 65535 or len(reasons) > 255 or len(p.recent) > 255 or len(p.interests) > 254
            or max(len(p.impressions), len(p.seen_keys), len(p.bought_keys), len(p.disliked_keys)) > 65535):
        raise ValueError(f"profile {p.user_id!r} has more entries than its format holds")
    if any(at[i] > 255 for i in p.recent):
        raise ValueError(f"profile {p.user_id!r}: recent items past the item table's first 256 rows")
    ids = [i.encode("utf-8") for i in rows]
    seen, bought, disliked = p.seen, p.purchased, p.disliked
    flags = [(SEEN if i in seen else 0) | (BOUGHT if i in bought else 0) | (DISLIKED if i in disliked else 0)
             for i in rows]
    imp = list(p.impressions.items())
    labels = [_label(r.label) if r.kind == "text" else b"" for r in reasons]
    refs = [(r.interest if r.interest is not None and r.interest < len(p.interests) else 255) if r.kind == "text"
            else at[r.label] for r in reasons]
    if any(ref > 255 for ref in refs):
        raise ValueError(f"profile {p.user_id!r}: a reason past the item table's first 256 rows")
    parts = [
        _HEAD.pack(p.dim, len(p.interests), len(reasons), n, len(p.recent), len(imp), len(p.seen_keys),
                   len(p.bought_keys), len(p.disliked_keys), p.version, p.updated_at, p.session_at),
        struct.pack("<H", len(uid)), uid, np.asarray(p.interest_ts, "<f8").tobytes(), s.astype("<f4").tobytes(),
        q.tobytes(),
        np.fromiter(map(len, ids), "<u2", n).tobytes(), b"".join(ids), np.asarray(flags, np.uint8).tobytes(),
        _u32(_row_times(p, rows)).tobytes(), _f16([p.recent_positive.get(i, 0.0) for i in rows]).tobytes(),
        np.asarray([at[i] for i in p.recent], np.uint8).tobytes(),
        np.asarray([k for k, _ in imp], "<u4").tobytes(), _f16([v[0] for _, v in imp]).tobytes(),
        _u32([v[1] for _, v in imp]).tobytes(),
        np.fromiter(p.seen_keys, "<u4", len(p.seen_keys)).tobytes(),
        np.fromiter(p.bought_keys, "<u4", len(p.bought_keys)).tobytes(),
        np.fromiter(p.disliked_keys, "<u4", len(p.disliked_keys)).tobytes(),
        np.asarray([0 if r.kind == "text" else 1 for r in reasons], np.uint8).tobytes(),
        np.asarray(refs, np.uint8).tobytes(), _f16([r.weight for r in reasons]).tobytes(),
        _u32([r.ts for r in reasons]).tobytes(), np.asarray([len(x) for x in labels], np.uint8).tobytes(),
        b"".join(labels),
    ]
    body = b"".join(parts)
    return MAGIC + struct.pack("<I", zlib.crc32(body)) + body


class _Reader:
    def __init__(self, buf: bytes, offset: int):
        self.buf, self.o = buf, offset

    def take(self, dtype: str, count: int) -> np.ndarray:
        a = np.frombuffer(self.buf, dtype, count, self.o)
        self.o += a.nbytes
        return a

    def raw(self, n: int) -> bytes:
        b = self.buf[self.o : self.o + n]
        if len(b) != n:
            raise ValueError("truncated")
        self.o += n
        return b


def _split(blob: bytes, lengths: np.ndarray) -> list[str]:
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]]
    return [blob[a:b].decode("utf-8") for a, b in zip(starts, ends)]


def decode(data: bytes, profile_cls, reason_cls):
    """A profile from ECP3 bytes (checksum verified by the caller)."""
    body = bytes(data[8:])
    dim, m, nr, nrows, nrec, nimp, nseen, nbought, ndis, version, t, st = _HEAD.unpack_from(body, 0)
    r = _Reader(body, _HEAD.size)
    uid = r.raw(int(r.take("<u2", 1)[0])).decode("utf-8")
    its = r.take("<f8", m).tolist()
    k = 2 + m
    s = r.take("<f4", k).astype(np.float32)
    x = dequantise(r.take(np.int8, k * dim).reshape(k, dim), s)
    lens = r.take("<u2", nrows)
    ids = _split(r.raw(int(lens.sum())), lens)
    flags = r.take(np.uint8, nrows).tolist()
    ts = r.take("<u4", nrows).astype(np.float64).tolist()
    weights = r.take("<f2", nrows).astype(np.float64).tolist()
    recent = [ids[j] for j in r.take(np.uint8, nrec).tolist()]
    keys = r.take("<u4", nimp).tolist()
    counts = r.take("<f2", nimp).astype(np.float64).tolist()
    imp_ts = r.take("<u4", nimp).astype(np.float64).tolist()
    seen_keys = dict.fromkeys(r.take("<u4", nseen).tolist())
    bought_keys = dict.fromkeys(r.take("<u4", nbought).tolist())
    disliked_keys = dict.fromkeys(r.take("<u4", ndis).tolist())
    kinds = r.take(np.uint8, nr).tolist()
    refs = r.take(np.uint8, nr).tolist()
    rw = r.take("<f2", nr).astype(np.float64).tolist()
    rts = r.take("<u4", nr).astype(np.float64).tolist()
    llens = r.take(np.uint8, nr)
    labels = _split(r.raw(int(llens.sum())), llens)
    if r.o != len(body):
        raise ValueError(f"{len(body) - r.o} bytes left over")
    seen = {i: tt for i, f, tt in zip(ids, flags, ts) if f & SEEN}
    bought = {i: tt for i, f, tt in zip(ids, flags, ts) if f & BOUGHT}
    disliked = {i: tt for i, f, tt in zip(ids, flags, ts) if f & DISLIKED}
    reasons = []
    for kind, ref, w, when, label in zip(kinds, refs, rw, rts, labels):
        if kind == 0:
            vec = None
            if ref != 255:
                c = x[2 + ref]
                vec = c / max(float(np.linalg.norm(c)), 1e-12)
            reasons.append(reason_cls("text", label, w, when, vec, ref if ref != 255 else None))
        else:
            reasons.append(reason_cls("item", ids[ref], w, when, None))
    weight = dict(zip(ids, weights))
    positive = {i: weight[i] for i in recent[-RECENT_WEIGHTS:]}
    return profile_cls(uid, dim, session=x[0].copy(), avoid=x[1].copy(), interests=x[2 : 2 + m].copy(),
                       interest_ts=its, updated_at=t, session_at=st, version=version, seen=seen, purchased=bought,
                       disliked=disliked, impressions={kk: [c, tt] for kk, c, tt in zip(keys, counts, imp_ts)},
                       recent_positive=positive, reasons=reasons, recent=recent, seen_keys=seen_keys,
                       bought_keys=bought_keys, disliked_keys=disliked_keys)


def size(p) -> int:
    """``len(encode(p))``, counted without encoding (also for a table past ``MAX_ROWS``)."""
    rows = _rows(p)
    at = set(rows)
    m = len(p.interests)
    reasons = [r for r in p.reasons if r.kind == "text" or r.label in at]
    return (8 + _HEAD.size + 2 + len(p.user_id.encode("utf-8")) + 8 * m + (2 + m) * (4 + p.dim)
            + sum(ROW_FIXED + len(i.encode("utf-8")) for i in rows) + len(p.recent) + IMP_BYTES * len(p.impressions)
            + KEY_BYTES * (len(p.seen_keys) + len(p.bought_keys) + len(p.disliked_keys))
            + sum(REASON_FIXED + (len(_label(r.label)) if r.kind == "text" else 0) for r in reasons))


def _keep_key(keys: dict, key: int, limit: int) -> int:
    """Remember ``key`` (newest last); returns the bytes this adds."""
    added = KEY_BYTES if key not in keys else 0
    keys.pop(key, None)
    keys[key] = None
    while len(keys) > limit:
        keys.pop(next(iter(keys)))
        added -= KEY_BYTES
    return added


def fit(p, budget: int, total: int | None = None) -> None:
    """Drop entries of ``p`` (in place), least useful first, until its encoding fits ``budget`` and
    its item table ``MAX_ROWS`` (``total``: its size now, when known). An item that leaves the table
    while seen, bought or disliked stays known by its 32-bit key (4 bytes, not ~20)."""
    state = {"total": size(p) if total is None else total, "rows": len(_rows(p))}

    def done() -> bool:
        return state["total"] <= budget and state["rows"] <= MAX_ROWS

    if done():
        return
    imps = sorted(p.impressions, key=lambda k: p.impressions[k][1])
    newest_imp = set(imps[-KEEP_IMPRESSIONS:])
    protected = set(p.recent[-KEEP_RECENT:])
    for d in (p.purchased, p.disliked):
        protected.update(sorted(d, key=d.get)[-KEEP_BOUGHT:])
    table = _rows(p)
    when = dict(zip(table, _row_times(p, table)))
    rows = sorted(table, key=when.get)
    kept = set(p.recent) | set(p.purchased) | set(p.disliked)

    def drop_imp(k) -> None:
        if state["total"] <= budget:  # only the row count is over: impressions would not help
            return
        del p.impressions[k]
        state["total"] -= IMP_BYTES

    def drop_row(i) -> None:
        key = item_key(i)
        state["total"] -= ROW_FIXED + len(i.encode("utf-8")) + (i in p.recent)
        state["rows"] -= 1
        if i in p.seen:
            state["total"] += _keep_key(p.seen_keys, key, MAX_SEEN_KEYS)
        if i in p.purchased:
            state["total"] += _keep_key(p.bought_keys, key, MAX_BOUGHT_KEYS)
        if i in p.disliked:
            state["total"] += _keep_key(p.disliked_keys, key, MAX_DISLIKED_KEYS)
        for d in (p.seen, p.purchased, p.disliked, p.recent_positive):
            d.pop(i, None)
        p.recent = [x for x in p.recent if x != i]
        left = [r for r in p.reasons if not (r.kind == "item" and r.label == i)]
        state["total"] -= REASON_FIXED * (len(p.reasons) - len(left))
        p.reasons = left

    def drop_keys(keys: dict, keep: int) -> None:
        while len(keys) > keep and not done():
            keys.pop(next(iter(keys)))
            state["total"] -= KEY_BYTES

    def each(drop, items):
        def run():
            for x in items:
                if done():
                    return
                drop(x)
        return run

    phases = [
        each(drop_imp, [k for k in imps if k not in newest_imp]),  # impressions but the newest 20
        each(drop_row, [i for i in rows if i not in protected and i not in kept]),  # items only seen
        each(drop_row, [i for i in rows if i not in protected and i in kept]),  # older bought, disliked, recent
        lambda: drop_keys(p.seen_keys, KEEP_SEEN_KEYS),
        lambda: drop_keys(p.bought_keys, KEEP_BOUGHT_KEYS),
        lambda: drop_keys(p.disliked_keys, KEEP_BOUGHT_KEYS),
        each(drop_imp, [k for k in imps if k in newest_imp]),
        lambda: drop_keys(p.seen_keys, 0),
        each(drop_row, [i for i in rows if i in protected]),
        lambda: drop_keys(p.seen_keys, 0),
        lambda: drop_keys(p.bought_keys, 0),
        lambda: drop_keys(p.disliked_keys, 0),
    ]
    for phase in phases:
        if done():
            return
        phase()
