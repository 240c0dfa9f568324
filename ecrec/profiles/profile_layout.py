"""What a state directory was written with: shard count, model and vector size.

Users are placed by ``shard_of(user_id, num_shards)`` and their profiles are vectors in one
model's space, so a deploy with another shard count or model over the same directory would
silently strand users (and erasure would miss them) or mix vector spaces. ``check_or_write``
records the layout on first use and refuses a mismatch with what to do instead.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

FILE = "layout.json"
KEY_FILE = "erasure.key"


@dataclass(frozen=True)
class Layout:
    num_shards: int
    model: str
    dim: int


class LayoutMismatch(RuntimeError):
    pass


def existing_shards(state_dir: Path) -> int:
    """Shard files present (``profiles-NNNN.db``): 1 + the highest index, 0 when none."""
    found = [int(m.group(1)) for p in state_dir.glob("profiles-*.db") if (m := re.fullmatch(r"profiles-(\d+)\.db", p.name))]
    return max(found) + 1 if found else 0


def check_or_write(state_dir: str | Path, want: Layout) -> Layout:
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / FILE
    if path.exists():
        have = Layout(**json.loads(path.read_text()))
    else:  # state written before layouts were recorded: its shard count is in its file names
        n = existing_shards(state_dir)
        have = Layout(n, want.model, want.dim) if n else want
    if have.num_shards != want.num_shards:
        raise LayoutMismatch(
            f"{state_dir} holds profiles sharded {have.num_shards} ways; this deploy asks for num_shards="
            f"{want.num_shards}, which would strand users on the wrong shard. Serve with num_shards="
            f"{have.num_shards}, or reshard offline first (`ecrec reshard --state-dir {state_dir} "
            f"--shards {want.num_shards}`, with the service stopped).")
    if (have.model, have.dim) != (want.model, want.dim):
        raise LayoutMismatch(
            f"{state_dir} holds profiles in the vector space of model {have.model!r} (dim {have.dim}); this "
            f"deploy serves {want.model!r} (dim {want.dim}). Use another state_dir= for this model.")
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(want), indent=2))
        tmp.rename(path)
    return have


def erasure_key(state_dir: str | Path) -> bytes:
    """The state directory's random key for erasure tombstones (created once, mode 0600)."""
    import os

    path = Path(state_dir) / KEY_FILE
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        try:
            os.link(tmp, path)  # atomic, and the first writer wins if shards race
        except FileExistsError:
            pass
        tmp.unlink()
    return path.read_bytes()
