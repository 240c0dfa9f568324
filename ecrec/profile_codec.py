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
``recent``) except the newest 10 of ``recent`` and 16 bought and disliked, then the newest
impressions, and those last. A profile is kept in its encodable state (``normalise``), so an encode and a
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
_HEAD = struct.Struct("<HBBHBHIdd")  # dim, m, reasons, rows, recent, impressions, version, t, st
_ROW = struct.Struct("<BIe")  # flags, ts, weight (after the id)
_IMP = struct.Struct("<IeI")  # key, count, ts
_REASON = struct.Struct("<BBeI")  # kind (0 text, 1 item), ref, weight, ts
IMP_BYTES, ROW_FIXED, REASON_FIXED = _IMP.size, 2 + _ROW.size, _REASON.size


def impression_key(item_id: str) -> int:
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


def _u32(ts: float) -> int:
    return int(min(max(round(ts), 0), 0xFFFFFFFF))


def _rows(p) -> list[str]:
    """The item table's ids, oldest interaction first."""
    ids = dict.fromkeys(p.seen)
    ids.update(dict.fromkeys(p.purchased))
    ids.update(dict.fromkeys(p.disliked))
    ids.update(dict.fromkeys(p.recent))
    return list(ids)


def _row_ts(p, i: str) -> float:
    return max(p.seen.get(i, 0.0), p.purchased.get(i, 0.0), p.disliked.get(i, 0.0),
               p.updated_at if i in p.recent and i not in p.seen else 0.0)


def encode(p) -> bytes:
    rows = _rows(p)
    at = {i: n for n, i in enumerate(rows)}
    vecs = np.stack([p.session, p.avoid, *p.interests]).astype(np.float32)
    if not np.isfinite(vecs).all():
        raise ValueError(f"profile {p.user_id!r} holds non-finite values; refusing to store it")
    uid = p.user_id.encode("utf-8")
    q, s = quantise(vecs, np.random.default_rng((zlib.crc32(uid), p.version)))
    reasons = [r for r in p.reasons if r.kind == "text" or r.label in at]
    if len(rows) > 255 or len(reasons) > 255 or len(p.recent) > 255 or len(p.interests) > 254:
        raise ValueError(f"profile {p.user_id!r} has more entries than its format holds")
    out = [_HEAD.pack(p.dim, len(p.interests), len(reasons), len(rows), len(p.recent),
                      len(p.impressions), p.version, p.updated_at, p.session_at),
           struct.pack("<H", len(uid)), uid, np.asarray(p.interest_ts, "<f8").tobytes(), s.astype("<f4").tobytes(),
           q.tobytes()]
    for i in rows:
        b = i.encode("utf-8")
        flags = (SEEN if i in p.seen else 0) | (BOUGHT if i in p.purchased else 0) | (DISLIKED if i in p.disliked else 0)
        out += [struct.pack("<H", len(b)), b, _ROW.pack(flags, _u32(_row_ts(p, i)), p.recent_positive.get(i, 0.0))]
    out.append(bytes(at[i] for i in p.recent))
    for key, (count, ts) in p.impressions.items():
        out.append(_IMP.pack(key, count, _u32(ts)))
    for r in reasons:
        if r.kind == "text":
            ref = r.interest if r.interest is not None and r.interest < len(p.interests) else 255
            lab = _label(r.label)
            out += [_REASON.pack(0, ref, r.weight, _u32(r.ts)), bytes([len(lab)]), lab]
        else:
            out.append(_REASON.pack(1, at[r.label], r.weight, _u32(r.ts)))
    body = b"".join(out)
    return MAGIC + struct.pack("<I", zlib.crc32(body)) + body


def decode(data: bytes, profile_cls, reason_cls):
    """A profile from ECP3 bytes (checksum verified by the caller)."""
    body = memoryview(data)[8:]
    dim, m, nr, nrows, nrec, nimp, version, t, st = _HEAD.unpack_from(body, 0)
    o = _HEAD.size
    (n,) = struct.unpack_from("<H", body, o)
    uid = bytes(body[o + 2 : o + 2 + n]).decode("utf-8")
    o += 2 + n
    its = np.frombuffer(body, "<f8", m, o).tolist()
    o += 8 * m
    k = 2 + m
    s = np.frombuffer(body, "<f4", k, o).astype(np.float32)
    o += 4 * k
    x = dequantise(np.frombuffer(body, np.int8, k * dim, o).reshape(k, dim), s)
    o += k * dim
    ids, seen, bought, disliked, weights = [], {}, {}, {}, {}
    for _ in range(nrows):
        (n,) = struct.unpack_from("<H", body, o)
        i = bytes(body[o + 2 : o + 2 + n]).decode("utf-8")
        flags, ts, w = _ROW.unpack_from(body, o + 2 + n)
        o += 2 + n + _ROW.size
        ids.append(i)
        weights[i] = w
        for flag, d in ((SEEN, seen), (BOUGHT, bought), (DISLIKED, disliked)):
            if flags & flag:
                d[i] = float(ts)
    recent = [ids[j] for j in body[o : o + nrec]]
    o += nrec
    imp = {}
    for _ in range(nimp):
        key, count, ts = _IMP.unpack_from(body, o)
        imp[key] = [float(count), float(ts)]
        o += _IMP.size
    reasons = []
    for _ in range(nr):
        kind, ref, w, ts = _REASON.unpack_from(body, o)
        o += _REASON.size
        if kind == 0:
            n = body[o]
            label = bytes(body[o + 1 : o + 1 + n]).decode("utf-8")
            o += 1 + n
            vec = None
            if ref != 255:
                c = x[2 + ref]
                vec = c / max(float(np.linalg.norm(c)), 1e-12)
            reasons.append(reason_cls("text", label, float(w), float(ts), vec, ref if ref != 255 else None))
        else:
            reasons.append(reason_cls("item", ids[ref], float(w), float(ts), None))
    if o != len(body):
        raise ValueError(f"{len(body) - o} bytes left over")
    positive = {i: float(weights[i]) for i in recent[-RECENT_WEIGHTS:]}
    return profile_cls(uid, dim, session=x[0].copy(), avoid=x[1].copy(), interests=x[2 : 2 + m].copy(),
                       interest_ts=its, updated_at=t, session_at=st, version=version, seen=seen, purchased=bought,
                       disliked=disliked, impressions=imp, recent_positive=positive, reasons=reasons, recent=recent)


def size(p) -> int:
    return len(encode(p))


def fit(p, budget: int, total: int | None = None) -> None:
    """Drop entries of ``p`` (in place), least useful first, until its encoding fits ``budget``
    (``total``: its size now, when known)."""
    total = size(p) if total is None else total
    if total <= budget:
        return
    newest_imp = set(sorted(p.impressions, key=lambda k: p.impressions[k][1])[-KEEP_IMPRESSIONS:])
    protected = set(p.recent[-KEEP_RECENT:])
    for d in (p.purchased, p.disliked):
        protected.update(sorted(d, key=d.get)[-KEEP_BOUGHT:])
    order = [(0, p.impressions[k][1], "imp", k) for k in p.impressions if k not in newest_imp]
    for i in _rows(p):
        ts = _row_ts(p, i)
        if i in protected:
            order.append((4, ts, "row", i))
        elif i in p.recent or i in p.purchased or i in p.disliked:
            order.append((2, ts, "row", i))
        else:
            order.append((1, ts, "row", i))
    order += [(3, p.impressions[k][1], "imp", k) for k in newest_imp]
    order.sort(key=lambda e: (e[0], e[1]))
    for _, _, kind, key in order:
        if kind == "imp":
            del p.impressions[key]
            total -= IMP_BYTES
        else:
            total -= ROW_FIXED + len(key.encode("utf-8")) + (key in p.recent)
            for d in (p.seen, p.purchased, p.disliked, p.recent_positive):
                d.pop(key, None)
            p.recent = [i for i in p.recent if i != key]
            kept = [r for r in p.reasons if not (r.kind == "item" and r.label == key)]
            total -= REASON_FIXED * (len(p.reasons) - len(kept))
            p.reasons = kept
        if total <= budget:
            return
