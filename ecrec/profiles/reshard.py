"""Offline resharding of a state directory: ``ecrec reshard --state-dir DIR --shards N``.

Users are placed by ``shard_of(user_id, num_shards)``, so another shard count moves most of them.
With the service stopped, this rebuilds every profile from its old shard (newest readable
snapshot + log), writes it as a snapshot into its new shard with the event ids (and its chat sessions) kept for
idempotency, copies every erasure tombstone to every new shard (they are keyed by the state
directory's ``erasure.key``, not by shard), and records the new layout. The old directory is kept
beside the new one until the operator deletes it.

Fencing (``ecrec.profiles.fencing``): each old shard is opened as a serving shard, so it takes a
new epoch in its file before its users are read; a shard process that should have been stopped and
still writes there is refused from then on (its client gets an error, not a lost acknowledgement),
instead of writing into what becomes the backup. The new files are written without a fence (no
shard serves them yet); the first shard to serve one takes its epoch 1.
"""
from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

from ecrec.profiles.profile_layout import FILE, KEY_FILE, Layout, erasure_key, existing_shards
from ecrec.profiles.shard import ProfileShard, shard_of
from ecrec.profiles.store import SQLiteStore

log = logging.getLogger(__name__)


def reshard(state_dir: str | Path, shards: int, dim: int | None = None, model: str | None = None) -> dict:
    state_dir = Path(state_dir)
    if shards < 1:
        raise ValueError("shards must be at least 1")
    layout_path = state_dir / FILE
    if layout_path.exists():
        layout = Layout(**json.loads(layout_path.read_text()))
    elif existing_shards(state_dir) and dim and model:
        layout = Layout(existing_shards(state_dir), model, dim)
    else:
        raise FileNotFoundError(f"{state_dir} has no {FILE}: pass dim and model, or serve it once first")
    if layout.num_shards == shards:
        return {"from": shards, "to": shards, "users": 0, "moved": 0, "backup": None}
    key = erasure_key(state_dir)
    tmp = state_dir.with_name(state_dir.name + ".reshard-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    (tmp / KEY_FILE).write_bytes(key)
    (tmp / KEY_FILE).chmod(0o600)
    for log_file in ("catalog.db", "content.db"):  # item and guide edits: sharding does not touch them
        if (state_dir / log_file).exists():  # the sqlite backup API copies consistently, WAL included
            with sqlite3.connect(state_dir / log_file) as src, sqlite3.connect(tmp / log_file) as dst:
                src.backup(dst)
    new = [SQLiteStore(tmp / f"profiles-{j:04d}.db") for j in range(shards)]
    users = moved = 0
    for i in range(layout.num_shards):
        path = state_dir / f"profiles-{i:04d}.db"
        if not path.exists():
            continue
        old = SQLiteStore(path)
        shard = ProfileShard(old, layout.dim, secret=key, shard_id=i)  # takes an epoch: see the docstring
        for user_id in list(shard.users()):
            profile = shard.get(user_id)
            j = shard_of(user_id, shards)
            new[j].snapshot(user_id, 0, profile.to_bytes())
            users += 1
            moved += j != i
        seen = defaultdict(list)
        for row in old.seen_rows():
            seen[shard_of(row[0], shards)].append(row)
        for j, rows in seen.items():
            new[j].add_seen(rows)
        for user_id, session_id, updated_at, state in old.chat_rows():  # conversations move with their user
            new[shard_of(user_id, shards)].put_chat(user_id, session_id, updated_at, bytes(state))
        for user_key, deleted_at, event_keys in old.tombstones():
            for store in new:
                store.put_tombstone(bytes(user_key), deleted_at, bytes(event_keys))
        old.close()
    for store in new:
        store.close()
    (tmp / FILE).write_text(json.dumps({"num_shards": shards, "model": layout.model, "dim": layout.dim}, indent=2))
    backup = state_dir.with_name(f"{state_dir.name}.before-reshard-{time.strftime('%Y%m%d-%H%M%S')}")
    state_dir.rename(backup)
    tmp.rename(state_dir)
    log.info("resharded %s: %d -> %d shards, %d users (%d moved); the old state is in %s",
             state_dir, layout.num_shards, shards, users, moved, backup)
    return {"from": layout.num_shards, "to": shards, "users": users, "moved": moved, "backup": str(backup)}
