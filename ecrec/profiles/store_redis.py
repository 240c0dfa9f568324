"""``EventStore`` on Redis: profiles that any node can load, for multi-node clusters.

Selected by ``store=redis://host:port/db`` (``open_store``). Every key of one deployment starts
with ``prefix`` (the Ray namespace), and each user's data lives under its own keys, so a shard
restarted on another node, or a cluster with another shard count, finds its users as they were:

    {p}:seq                      INCR: one sequence for the whole store (events are ordered per user)
    {p}:ev:{user}                hash  seq -> payload          the event log after the older snapshot
    {p}:snap:{user}              hash  seq -> blob             the two newest snapshots
    {p}:head:{user}              string seq|blob               the profile after the newest write (expires)
    {p}:seen:{user}              hash  event_id -> at          idempotency keys (kept seen_retention_s)
    {p}:chat:{user}              hash  session -> at|state     chat sessions
    {p}:chats                    zset  user\\0session -> at     for purging idle sessions
    {p}:users                    set   users with data
    {p}:tombstones               hash  user key -> at|event keys (keyed hashes: no personal data)
    {p}:secret                   the store's random key
    {p}:epoch:{shard}            INCR: the newest epoch a serving incarnation of that shard took

Each write is one Lua script, so it is atomic on the server. A head expires ``HEAD_TTL_S`` after
its user's last write (a reader then asks the shard), so heads cost memory for active users only. What "acknowledged" means is the
server's AOF setting (``redis-server --appendonly yes``): with ``appendfsync always`` an
acknowledged event is on disk before the answer; with ``everysec`` (Redis's default) a crash of
the Redis host can lose the last second. ``open_store`` warns when AOF is off.

Writes are fenced (``ecrec.profiles.fencing``): each write script ends its KEYS with the shard's
epoch key and its ARGV with the writer's epoch, and checks them before writing anything, so a
write from a replaced incarnation is refused whole, in the same atomic step.
"""
from __future__ import annotations

import logging
import os
import struct
import time

from ecrec.profiles.fencing import Fence, FencedError
from ecrec.profiles.store import ABSENT, BEHIND, CURRENT, SEEN_RETENTION_S

HEAD_TTL_S = 86400

log = logging.getLogger(__name__)

# The start of every write script: the last KEYS entry is the shard's epoch key, the last ARGV the
# writer's epoch ('' for an offline tool's write: not checked). Nothing is written before it, so
# a refused write applies nothing.
_FENCE = """
local fence = ARGV[#ARGV]
if fence ~= '' then
  local newest = tonumber(redis.call('GET', KEYS[#KEYS]) or '0')
  if newest > tonumber(fence) then return redis.error_reply('FENCED ' .. newest) end
end
"""
# KEYS: seen, seq, ev, users, head.  ARGV: event id, payload, now, user, head ("" for none), ttl.
_APPEND = _FENCE + """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) == 0 then return false end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], seq, ARGV[2])
redis.call('SADD', KEYS[4], ARGV[4])
if ARGV[5] ~= '' then redis.call('SET', KEYS[5], struct.pack('<d', seq) .. ARGV[5], 'EX', ARGV[6]) end
return seq
"""
# KEYS: seq, users; then per row its ev key and head key.  ARGV: ttl; then per row user, payload, head.
# (Then the fence's key and epoch, as in every write script.)
_APPEND_MANY = _FENCE + """
local out = {}
for i = 0, (#KEYS - 3) / 2 - 1 do
  local seq = redis.call('INCR', KEYS[1])
  redis.call('HSET', KEYS[3 + 2 * i], seq, ARGV[3 + 3 * i])
  redis.call('SADD', KEYS[2], ARGV[2 + 3 * i])
  if ARGV[4 + 3 * i] ~= '' then
    redis.call('SET', KEYS[4 + 2 * i], struct.pack('<d', seq) .. ARGV[4 + 3 * i], 'EX', ARGV[1])
  end
  out[#out + 1] = seq
end
return out
"""
# KEYS: head, ev, snap.  The head and the newest logged event's seq, read in one script.
_READ_HEAD = """
local head = redis.call('GET', KEYS[1])
local newest = -1
for _, s in ipairs(redis.call('HKEYS', KEYS[2])) do
  if tonumber(s) > newest then newest = tonumber(s) end
end
if head then
  if newest >= 0 and struct.unpack('<d', head) >= newest then return {1, string.sub(head, 9)} end
  return {2}
end
if newest >= 0 or redis.call('EXISTS', KEYS[3]) == 1 then return {2} end
return {0}
"""
# KEYS: snap, ev, seen, users.  ARGV: seq, blob, seen cutoff, user.
_SNAPSHOT = _FENCE + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[4])
local seqs = {}
for _, s in ipairs(redis.call('HKEYS', KEYS[1])) do seqs[#seqs + 1] = tonumber(s) end
table.sort(seqs, function(a, b) return a > b end)
for i = 3, #seqs do redis.call('HDEL', KEYS[1], seqs[i]) end
if #seqs >= 2 then
  local older = seqs[2]
  for _, s in ipairs(redis.call('HKEYS', KEYS[2])) do
    if tonumber(s) <= older then redis.call('HDEL', KEYS[2], s) end
  end
end
local seen = redis.call('HGETALL', KEYS[3])
for i = 1, #seen, 2 do
  if tonumber(seen[i + 1]) < tonumber(ARGV[3]) then redis.call('HDEL', KEYS[3], seen[i]) end
end
return #seqs
"""


# KEYS: chats index.  ARGV: cutoff, prefix.  Each member is checked and removed under the script,
# so a session written after the scan (its score moved past the cutoff) is never deleted.
_PURGE = _FENCE + """
local n = 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])) do
  local score = tonumber(redis.call('ZSCORE', KEYS[1], m))
  if score and score < tonumber(ARGV[1]) then
    local sep = string.find(m, '\\0', 1, true)
    redis.call('HDEL', ARGV[2] .. ':chat:' .. string.sub(m, 1, sep - 1), string.sub(m, sep + 1))
    redis.call('ZREM', KEYS[1], m)
    n = n + 1
  end
end
return n
"""

# KEYS: chat, chats.  ARGV: session, at|state, chats member, at.
_PUT_CHAT = _FENCE + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
"""
# KEYS: chat, chats.  ARGV: session, chats member.
_DELETE_CHAT = _FENCE + """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
"""
# KEYS: snap.  ARGV: seq.
_DROP_SNAPSHOT = _FENCE + """
redis.call('HDEL', KEYS[1], ARGV[1])
"""


def _pack(at: float, data: bytes) -> bytes:
    return struct.pack("<d", at) + data


def _unpack(raw: bytes) -> tuple[float, bytes]:
    return struct.unpack_from("<d", raw, 0)[0], raw[8:]


class RedisStore:
    def __init__(self, url: str, prefix: str = "ecrec", seen_retention_s: float = SEEN_RETENTION_S, client=None,
                 timeout_s: float | None = None):
        """``url`` without a password takes ``ECREC_REDIS_PASSWORD`` from the environment (secrets
        stay out of config files). ``timeout_s``: a reader's short deadline for connecting and for
        each answer, with no retries (a reader has somewhere else to go: the shard); writers wait
        up to 10 s for an answer."""
        import redis

        self.url, self.prefix, self.seen_retention_s = url, prefix, seen_retention_s
        extra = {}
        if os.environ.get("ECREC_REDIS_PASSWORD") and "@" not in url:
            extra["password"] = os.environ["ECREC_REDIS_PASSWORD"]
        if timeout_s is not None:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            extra.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
        else:
            extra.update(socket_timeout=10)
        self.r = client if client is not None else redis.Redis.from_url(url, health_check_interval=30, **extra)
        self._append = self.r.register_script(_APPEND)
        self._append_many = self.r.register_script(_APPEND_MANY)
        self._snapshot = self.r.register_script(_SNAPSHOT)
        self._read_head = self.r.register_script(_READ_HEAD)
        self._purge = self.r.register_script(_PURGE)
        self._put_chat = self.r.register_script(_PUT_CHAT)
        self._delete_chat = self.r.register_script(_DELETE_CHAT)
        self._drop_snapshot = self.r.register_script(_DROP_SNAPSHOT)

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def take_epoch(self, shard: int) -> int:
        return int(self.r.incr(self._k("epoch", str(shard))))

    def _write(self, script, keys: list, args: list, fence: Fence | None):
        """Run a write script with the fence's key and epoch last; its refusal as ``FencedError``."""
        import redis

        key = self._k("epoch", str(fence.shard)) if fence is not None else self._k("epoch")
        try:
            return script(keys=[*keys, key], args=[*args, fence.epoch if fence is not None else ""])
        except redis.ResponseError as e:
            if fence is not None and str(e).startswith("FENCED "):
                raise FencedError(fence.shard, fence.epoch, int(str(e).split()[1])) from None
            raise

    def durability(self) -> dict:
        """The server's persistence settings (what an acknowledged write survives); unknown where
        CONFIG is not allowed (managed Redis, restricted ACLs)."""
        import redis

        try:
            cfg = self.r.config_get("append*")
        except redis.ResponseError:
            return {"appendonly": "unknown", "appendfsync": "unknown"}
        return {"appendonly": cfg.get("appendonly"), "appendfsync": cfg.get("appendfsync")}

    # ---- events and snapshots ----------------------------------------------------------------
    def append(self, user_id: str, event_id: str, payload: bytes, head: bytes | None = None, *,
               fence: Fence | None = None) -> int | None:
        seq = self._write(self._append, [self._k("seen", user_id), self._k("seq"), self._k("ev", user_id),
                                         self._k("users"), self._k("head", user_id)],
                          [event_id, payload, repr(time.time()), user_id, head or b"", HEAD_TTL_S], fence)
        return int(seq) if seq is not None else None

    def append_many(self, rows: list[tuple[str, bytes]], heads: list[bytes] | None = None, *,
                    fence: Fence | None = None) -> list[int]:
        if not rows:
            return []
        keys, args = [self._k("seq"), self._k("users")], [HEAD_TTL_S]
        for i, (u, p) in enumerate(rows):
            keys += [self._k("ev", u), self._k("head", u)]
            args += [u, p, heads[i] if heads is not None else b""]
        return [int(s) for s in self._write(self._append_many, keys, args, fence)]

    def read_head(self, user_id: str) -> tuple[str, bytes | None]:
        out = self._read_head(keys=[self._k("head", user_id), self._k("ev", user_id), self._k("snap", user_id)])
        code = int(out[0])
        if code == 1:
            return CURRENT, bytes(out[1])
        return (ABSENT if code == 0 else BEHIND), None

    def snapshot(self, user_id: str, seq: int, blob: bytes, *, fence: Fence | None = None) -> None:
        self._write(self._snapshot, [self._k("snap", user_id), self._k("ev", user_id), self._k("seen", user_id),
                                     self._k("users")],
                    [seq, blob, repr(time.time() - self.seen_retention_s), user_id], fence)

    def load_user(self, user_id: str):
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._k("snap", user_id))
            pipe.hgetall(self._k("ev", user_id))
            snaps, events = pipe.execute()
        kept = sorted(((int(s), bytes(b)) for s, b in snaps.items()), reverse=True)[:2]
        oldest = kept[-1][0] if len(kept) == 2 else 0
        return kept, sorted((int(s), bytes(p)) for s, p in events.items() if int(s) > oldest)

    def users(self):
        yield from sorted(u.decode() for u in self.r.smembers(self._k("users")))

    def drop_snapshot(self, user_id: str, seq: int, *, fence: Fence | None = None) -> None:
        self._write(self._drop_snapshot, [self._k("snap", user_id)], [seq], fence)

    # ---- erasure -----------------------------------------------------------------------------
    def delete_user(self, user_id: str, tombstone=None, *, fence: Fence | None = None) -> list[str]:
        """Rows and tombstone in one MULTI/EXEC, retried if the user's keys (or the fence's epoch
        key: a new incarnation starting) change meanwhile."""
        import redis

        keys = [self._k(kind, user_id) for kind in ("ev", "snap", "head", "seen", "chat")]
        epoch_key = self._k("epoch", str(fence.shard)) if fence is not None else None
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*keys, *([epoch_key] if fence is not None else []))
                    newest = int(pipe.get(epoch_key) or 0) if fence is not None else 0
                    if fence is not None and newest > fence.epoch:
                        raise FencedError(fence.shard, fence.epoch, newest)
                    ids = [e.decode() for e in pipe.hkeys(self._k("seen", user_id))]
                    sessions = [s.decode() for s in pipe.hkeys(self._k("chat", user_id))]
                    pipe.multi()
                    pipe.delete(*keys)
                    pipe.srem(self._k("users"), user_id)
                    if sessions:
                        pipe.zrem(self._k("chats"), *(f"{user_id}\0{s}" for s in sessions))
                    if tombstone is not None:
                        key, at, event_keys = tombstone(ids)
                        pipe.hset(self._k("tombstones"), key, _pack(at, event_keys))
                    pipe.execute()
                    return ids
                except redis.WatchError:
                    continue

    def put_tombstone(self, key: bytes, deleted_at: float, event_keys: bytes) -> None:
        self.r.hset(self._k("tombstones"), key, _pack(deleted_at, event_keys))

    def tombstones(self):
        for key, raw in self.r.hgetall(self._k("tombstones")).items():
            at, keys = _unpack(raw)
            yield bytes(key), at, keys

    def secret(self) -> bytes:
        self.r.set(self._k("secret"), os.urandom(32), nx=True)
        return bytes(self.r.get(self._k("secret")))

    # ---- chat sessions -----------------------------------------------------------------------
    def put_chat(self, user_id: str, session_id: str, updated_at: float, state: bytes, *,
                 fence: Fence | None = None) -> None:
        self._write(self._put_chat, [self._k("chat", user_id), self._k("chats")],
                    [session_id, _pack(updated_at, state), f"{user_id}\0{session_id}", repr(updated_at)], fence)

    def get_chat(self, user_id: str, session_id: str) -> bytes | None:
        raw = self.r.hget(self._k("chat", user_id), session_id)
        return _unpack(raw)[1] if raw is not None else None

    def delete_chat(self, user_id: str, session_id: str, *, fence: Fence | None = None) -> None:
        self._write(self._delete_chat, [self._k("chat", user_id), self._k("chats")],
                    [session_id, f"{user_id}\0{session_id}"], fence)

    def purge_chats(self, idle_before: float, *, fence: Fence | None = None) -> int:
        """Sessions idle since before ``idle_before``, in one script (every shard sweeps the same
        index: a session one shard writes meanwhile is never deleted by another)."""
        return int(self._write(self._purge, [self._k("chats")], [repr(idle_before), self.prefix], fence))

    def chat_rows(self) -> list[tuple[str, str, float, bytes]]:
        out = []
        for member in self.r.zrange(self._k("chats"), 0, -1):
            user_id, session_id = member.decode().split("\0", 1)
            raw = self.r.hget(self._k("chat", user_id), session_id)
            if raw is not None:
                at, state = _unpack(raw)
                out.append((user_id, session_id, at, state))
        return out

    def seen_rows(self) -> list[tuple[str, str, float]]:
        return [(u, e.decode(), float(at)) for u in self.users()
                for e, at in self.r.hgetall(self._k("seen", u)).items()]

    def add_seen(self, rows: list[tuple[str, str, float]]) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            for u, e, at in rows:
                pipe.hsetnx(self._k("seen", u), e, repr(at))
            pipe.execute()

    def count_rows(self, user_id: str) -> int:
        return (sum(self.r.hlen(self._k(kind, user_id)) for kind in ("ev", "snap", "seen", "chat"))
                + self.r.exists(self._k("head", user_id)))

    def close(self) -> None:
        self.r.close()


def open_store(spec: str, path, synchronous: str = "FULL", prefix: str = "ecrec"):
    """``sqlite`` (a file at ``path``) or ``redis://...`` (keys under ``prefix``)."""
    if spec == "sqlite":
        from ecrec.profiles.store import SQLiteStore

        return SQLiteStore(path, synchronous=synchronous)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        store = RedisStore(spec, prefix=prefix)
        d = store.durability()
        if d["appendonly"] == "unknown":
            log.warning("cannot read redis's AOF settings (CONFIG not allowed): make sure it runs with "
                        "appendonly yes, or acknowledged events may not survive a Redis restart")
        elif d["appendonly"] != "yes":
            log.warning("redis at %s runs without AOF (appendonly=%s): acknowledged events do not survive "
                        "a Redis restart; start it with --appendonly yes --appendfsync always|everysec",
                        spec.split("@")[-1], d["appendonly"])
        return store
    raise ValueError(f"store must be 'sqlite' or a redis:// URL, got {spec!r}")
