"""Build the index artifact; large catalogs embed with Ray Data (an actor pool of encoders)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from deployments.config import AppArgs

log = logging.getLogger(__name__)


class _EmbedBatch:
    """A Ray Data actor: loads the encoder once, embeds ``passage`` texts batch by batch."""

    def __init__(self, model: str, max_length: int, threads: int):
        from ecrec.text.encoder import EncoderConfig, TextEncoder

        self.encoder = TextEncoder(EncoderConfig(model=model, max_length=max_length, num_threads=threads))

    def __call__(self, batch: dict) -> dict:
        x = self.encoder.encode(list(batch["text"]), "passage")
        return {"row": batch["row"], "vector": x}


def embed_with_ray_data(texts: list[str], model: str, max_length: int = 128, actors: int = 2,
                        threads: int = 1, batch_size: int = 64, num_cpus: float | None = None) -> np.ndarray:
    import ray

    ds = ray.data.from_items([{"row": i, "text": t} for i, t in enumerate(texts)])
    out = ds.map_batches(_EmbedBatch, fn_constructor_args=(model, max_length, threads),
                         batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                         num_cpus=num_cpus if num_cpus is not None else threads, batch_format="numpy")
    rows = out.take_all()
    x = np.zeros((len(texts), len(rows[0]["vector"])), np.float32)
    for r in rows:
        x[r["row"]] = r["vector"]
    return x


def build(catalog: str | Path, out: str | Path, model: str = "e5-small", factory: str = "auto",
          ray_data_above: int = 20_000, actors: int = 2) -> Path:
    """In-process for small catalogs, Ray Data for catalogs above ``ray_data_above`` items.
    ``factory``: a FAISS factory string, or "auto" (``ecrec.retrieval.index.choose_factory``)."""
    from ecrec.retrieval.artifact import build_artifact_in_process, write_artifact
    from ecrec.retrieval.catalog import load_catalog
    from ecrec.text.encoder import EncoderConfig, TextEncoder, default_home
    from ecrec.retrieval.index import choose_factory

    items = load_catalog(catalog)
    factory = choose_factory(factory, len(items))
    if len(items) <= ray_data_above:
        enc = TextEncoder(EncoderConfig(model=model))
        return build_artifact_in_process(catalog, out, enc, factory, cache_dir=default_home() / "cache")
    x = embed_with_ray_data([it.embedding_text() for it in items], model, actors=actors)
    return write_artifact(items, x, out, model, factory, catalog)


def _build_lock(d: Path):
    """One builder per artifact folder on a node (replicas starting together): a lock file."""
    import contextlib
    import fcntl

    @contextlib.contextmanager
    def held():
        d.parent.mkdir(parents=True, exist_ok=True)
        with open(d.with_name(d.name + ".lock"), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    return held()


def ensure_artifact(args: AppArgs) -> Path:
    """The artifact to serve: built when missing; rebuilt when the default one no longer matches
    the model or catalog; refused when an explicit ``index_dir`` does not match them. Builders on
    one node take turns (the second finds it built)."""
    with _build_lock(args.resolved_index_dir()):
        return _ensure_artifact(args)


def _ensure_artifact(args: AppArgs) -> Path:
    import json

    from ecrec.retrieval.artifact import stale_reason

    d = args.resolved_index_dir()
    if not (d / "manifest.json").exists():
        log.info("no index artifact at %s: building it from %s", d, args.catalog)
        return build(args.catalog, d, args.model, args.index_factory)
    manifest = json.loads((d / "manifest.json").read_text())
    explicit = args.index_dir is not None
    check_catalog = not explicit or "catalog" in args.model_fields_set
    why = stale_reason(manifest, args.model, args.catalog if check_catalog else None)
    if why is None:
        return d
    if explicit:
        raise ValueError(f"the index artifact at {d} does not match this deploy: {why}. Rebuild it "
                         f"(`ecrec index build --catalog ... --model {args.model} --out {d}`) or point "
                         "index_dir elsewhere")
    log.warning("the index artifact at %s is stale (%s): rebuilding it", d, why)
    return build(args.catalog, d, args.model, args.index_factory)


def ensure_content(args: AppArgs, dim: int) -> Path:
    """The content artifact to serve: built from ``args.content`` when missing or stale (seconds)."""
    with _build_lock(args.resolved_content_dir()):
        return _ensure_content(args, dim)


def _ensure_content(args: AppArgs, dim: int) -> Path:
    from ecrec.content.artifact import build_content_artifact, content_stale
    from ecrec.text.encoder import EncoderConfig, TextEncoder, default_home

    d = args.resolved_content_dir()
    why = content_stale(d, args.model, args.content or None)
    if why is None:
        return d
    log.info("content artifact at %s: %s; building it from %s", d, why, args.content or "nothing")
    enc = TextEncoder(EncoderConfig(model=args.model)) if args.content else None
    if enc is None:
        from ecrec.content.artifact import write_content_artifact

        return write_content_artifact([], np.zeros((0, dim), np.float32), d, args.model)
    return build_content_artifact(args.content, d, enc, dim, cache_dir=default_home() / "cache")
