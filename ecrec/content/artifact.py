"""The content artifact: documents + their passage vectors, one folder a replica loads.

Built at deploy time from a seed file (the demo ships bilingual guides), like the index
artifact from the catalog; edits made through the API live in the catalog board's content log
and replay on top of it.
"""
from __future__ import annotations

import json
import shutil
import time
import hashlib
from pathlib import Path

import numpy as np

from ecrec.retrieval.artifact import catalog_digest
from ecrec.content.library import Content, load_content


def write_content_artifact(docs: list[Content], vectors: np.ndarray, out_dir: str | Path, model: str,
                           source: str | Path | None = None) -> Path:
    """Atomically: a half-written artifact is never visible under ``out_dir``."""
    if len(docs) != len(vectors):
        raise ValueError(f"{len(docs)} documents but {len(vectors)} vectors")
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp{time.time_ns()}")
    tmp.mkdir(parents=True)
    np.save(tmp / "vectors.npy", np.asarray(vectors, np.float32))
    with (tmp / "content.jsonl").open("w", encoding="utf-8") as f:
        for d in docs:
            f.write(d.model_dump_json() + "\n")
    (tmp / "manifest.json").write_text(json.dumps({
        "model": model, "dim": int(vectors.shape[1]) if len(vectors) else 0, "documents": len(docs),
        "created_at": time.time(),  # the same seed and model give the same id on every node
        "artifact_id": hashlib.sha256(f"{model}|{catalog_digest(source) if source else ''}".encode()).hexdigest()[:32],
        "source": str(source) if source else None,
        "source_sha256": catalog_digest(source) if source else None}, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def read_content_artifact(directory: str | Path) -> tuple[list[Content], np.ndarray, dict]:
    d = Path(directory)
    if not (d / "manifest.json").exists():
        raise FileNotFoundError(f"no content artifact at {d}")
    manifest = json.loads((d / "manifest.json").read_text())
    docs = load_content(d / "content.jsonl") if (d / "content.jsonl").stat().st_size else []
    return docs, np.load(d / "vectors.npy"), manifest


def content_stale(directory: str | Path, model: str, source: str | Path | None) -> str | None:
    """Why the artifact at ``directory`` must be rebuilt, or None."""
    p = Path(directory) / "manifest.json"
    if not p.exists():
        return "it is missing"
    m = json.loads(p.read_text())
    if m.get("model") != model:
        return f"it was built with model {m.get('model')!r}"
    want = catalog_digest(source) if source else None
    if m.get("source_sha256") != want:
        return "its seed file changed"
    return None


def build_content_artifact(source: str | Path | None, out_dir: str | Path, encoder, dim: int,
                           cache_dir: Path | None = None) -> Path:
    """Embed the seed documents (``passage`` role, like items) and write the artifact; no seed: empty."""
    from ecrec.text.encoder import encode_cached

    docs = load_content(source) if source else []
    x = (encode_cached(encoder, [d.embedding_text() for d in docs], "passage", cache_dir) if docs
         else np.zeros((0, dim), np.float32))
    return write_content_artifact(docs, x, out_dir, encoder.name, source)
