"""Index artifacts: item metadata + vectors + the FAISS layout, as one folder a replica loads."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ecrec.retrieval.catalog import Item, load_catalog
from ecrec.retrieval.index import VectorIndex, item_meta

FORMAT = 1


def catalog_digest(path: str | Path) -> str:
    """sha256 of a catalog file: what an artifact was built from."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stale_reason(manifest: dict, model: str, catalog: str | Path | None) -> str | None:
    """Why an artifact does not match (model, catalog), or None when it does. ``catalog`` None:
    the catalog is not checked (an artifact built elsewhere, served as given)."""
    if manifest.get("model") != model:
        return f"it was built with model {manifest.get('model')!r}, not {model!r}"
    if catalog is not None and manifest.get("catalog_sha256") != catalog_digest(catalog):
        return f"it was built from another catalog than {str(catalog)!r}"
    return None


def write_artifact(items: list[Item], vectors: np.ndarray, out_dir: str | Path, model: str,
                   factory: str = "Flat", catalog: str | Path | None = None) -> Path:
    """Write atomically: a half-written artifact is never visible under ``out_dir``."""
    if len(items) != len(vectors):
        raise ValueError(f"{len(items)} items but {len(vectors)} vectors")
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp{time.time_ns()}")
    index = VectorIndex(vectors.shape[1], factory)
    if not index._index.is_trained:
        index.train(vectors)
    index.upsert([it.id for it in items], vectors, [item_meta(it) for it in items])
    index.save(tmp)
    with (tmp / "items.jsonl").open("w", encoding="utf-8") as f:
        for it in items:
            f.write(it.model_dump_json() + "\n")
    # The same inputs give the same id on every node: a replica that builds its own copy (on a node
    # the driver never wrote to) applies the catalog log as the same artifact.
    h = hashlib.sha256(f"{FORMAT}|{model}|{factory}|".encode())
    if catalog:
        h.update(catalog_digest(catalog).encode())
    else:
        for it in items:
            h.update(it.model_dump_json().encode())
        h.update(np.ascontiguousarray(vectors, np.float32).tobytes())
    manifest = {"format": FORMAT, "model": model, "dim": int(vectors.shape[1]), "items": len(items),
                "factory": factory, "created_at": time.time(), "artifact_id": h.hexdigest()[:32],
                "catalog": str(catalog) if catalog else None,
                "catalog_sha256": catalog_digest(catalog) if catalog else None}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def read_artifact(directory: str | Path) -> tuple[list[Item], VectorIndex, dict]:
    d = Path(directory)
    manifest_path = d / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"no index artifact at {d}: run `ecrec index build --out {d}`")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{d}: artifact format {manifest.get('format')} != {FORMAT}; rebuild it")
    items = load_catalog(d / "items.jsonl")
    return items, VectorIndex.load(d), manifest


def build_artifact_in_process(catalog: str | Path, out_dir: str | Path, encoder, factory: str = "Flat",
                              cache_dir: Path | None = None) -> Path:
    """Small catalogs: embed in this process (``passage`` role) and write the artifact."""
    from ecrec.text.encoder import encode_cached

    items = load_catalog(catalog)
    x = encode_cached(encoder, [it.embedding_text() for it in items], "passage", cache_dir)
    return write_artifact(items, x, out_dir, encoder.name, factory, catalog)
