"""Profiles written in the formats before ECP3, for the tests that old snapshots still load."""
import json
import struct
import zlib

import numpy as np


def v2_bytes(p, scaled: bool = True) -> bytes:
    """``p`` as ECP2 (scaled float16 rows, crc32) or, unscaled and without checksum, ECP1."""
    reason_vecs = [r.vector if r.vector is not None else np.zeros(p.dim, np.float32) for r in p.reasons]
    vecs = np.stack([p.long, p.session, p.avoid, *p.interests, *reason_vecs]).astype(np.float32)
    scales = np.abs(vecs).max(axis=1)
    scales[scales == 0] = 1.0
    imp = {f"item-{k}": v for k, v in p.impressions.items()}  # ECP2 kept item ids; the hashes do not invert
    head = {"u": p.user_id, "d": p.dim, "m": len(p.interests), "t": p.updated_at, "st": p.session_at,
            "v": p.version, "its": p.interest_ts, "seen": p.seen, "pur": p.purchased, "dis": p.disliked,
            "imp": imp, "rp": p.recent_positive, "r": [[r.kind, r.label, r.weight, r.ts] for r in p.reasons],
            "rs": p.recent}
    if not scaled:
        hb = json.dumps(head).encode()
        return b"ECP1" + struct.pack("<I", len(hb)) + hb + vecs.astype(np.float16).tobytes()
    head["sc"] = [float(x) for x in scales]
    hb = json.dumps(head).encode()
    body = struct.pack("<I", len(hb)) + hb + (vecs / scales[:, None]).astype(np.float16).tobytes()
    return b"ECP2" + struct.pack("<I", zlib.crc32(body)) + body
