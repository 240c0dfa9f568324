"""Operator routes of the ingress: reload, online metrics, drift, health. An ``APIRouter`` of plain
functions, which receive what they use, declared by ``AdminServices``, through
``Depends(services)`` (the app factory, ``http_app.build_http_app``, says why)."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from ray.exceptions import RayTaskError

from deployments.config import AppArgs
from deployments.http_app import ApiError, services

router = APIRouter()


class AdminServices(Protocol):
    """What the operator routes use of the ingress (``deployments.ingress.Ingress`` provides it)."""

    args: AppArgs
    encoder: Any  # the Encoder deployment's handle
    retrievers: list  # this replica's retriever pool
    shards: list  # the profile shard actors
    board: Any  # the CatalogBoard actor
    drift: Any  # the drift monitor actor
    view: Any  # this replica's catalog view (colocate_retrieval), else None
    encoder_version: str  # the encoder's model + heads, as last seen ("": not yet); readyz sets it
    index_version: str
    sequence_version: str

    @property
    def retriever(self) -> Any: ...
    async def reload_view(self, generation) -> None: ...
    def model_version(self, analysis=None) -> str: ...


@router.post("/v1/admin/reload")
async def admin_reload(svc: AdminServices = Depends(services)) -> dict:
    """Swap the models and index artifact the long-lived actors hold (retrievers, and with
    ``colocate_retrieval`` each ingress replica's own catalog view), without recreating them.
    This replica's view is rebuilt before the answer; the other replicas see the board's new
    reload generation at their next catalog sync and rebuild theirs."""
    import ray

    # every ingress replica's pool, found by name, not only this replica's
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == svc.args.namespace and a["name"].startswith("ecrec-retriever-")]
    pool = [ray.get_actor(n, namespace=svc.args.namespace) for n in names] or svc.retrievers
    views = await asyncio.gather(*(r.reload.remote() for r in pool))
    # only after the retrievers took it: a broken artifact fails here, before any ingress tries it
    generation = await svc.board.bump_generation.remote()
    if svc.view is not None:
        await svc.reload_view(generation)
    return {"retrievers": len(views), "ingress_view": svc.view is not None,
            "artifact_id": views[0]["artifact_id"] if views else None}


@router.get("/v1/admin/metrics/summary")
async def metrics_summary(window_s: float = Query(3600.0, gt=0, le=86400),
                          svc: AdminServices = Depends(services)) -> dict:
    """Online metrics over the last ``window_s`` seconds, summed over every shard: CTR and CVR
    by source, position bucket and arm, coverage, cold-start share, sentiment mix
    (``ecrec.operations.attribution``; the same counts are in Prometheus)."""
    from ecrec.operations.attribution import merge, report

    now = time.time()
    windows = await asyncio.gather(*(sh.metrics_window.remote(window_s, now) for sh in svc.shards))
    catalog = (await svc.retriever.info.remote())["items"]
    return {**report(merge(windows), catalog, window_s), "model_version": svc.model_version()}


@router.get("/v1/admin/drift")
async def drift_scores(svc: AdminServices = Depends(services)) -> dict:
    """Drift of recent texts and events against the reference (``ecrec.operations.drift``):
    scores, the alarms raised and why; ``ready`` is false until enough texts arrived."""
    return await svc.drift.scores.remote()


@router.get("/v1/admin/drift/history")
async def drift_history(svc: AdminServices = Depends(services)) -> dict:
    """Drift scores over the last day: a point a minute and one at every alarm change
    (``ecrec.operations.drift_history``; ``ecrec drift-plot`` draws them)."""
    return {"points": await svc.drift.history_points.remote()}


@router.post("/v1/admin/drift/reference")
async def drift_refit(svc: AdminServices = Depends(services)) -> dict:
    """Make the recent window the drift reference (after a deliberate change: a new market,
    a retrained model)."""
    try:
        return await svc.drift.refit.remote()
    except RayTaskError as e:
        if isinstance(e.cause, ValueError):
            raise ApiError(409, str(e.cause)) from e
        raise


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(svc: AdminServices = Depends(services)):
    try:
        # asyncio.timeout, not wait_for(gather): a request cancelled meanwhile (a poll that gave
        # up while the graph starts) left wait_for's gather unread, which asyncio logs as a
        # "_GatheringFuture exception was never retrieved" traceback
        async with asyncio.timeout(5):
            enc, ret, *_ = await asyncio.gather(
                svc.encoder.info.remote(), *(r.info.remote() for r in svc.retrievers),
                svc.board.last_seq.remote(), *(sh.ping.remote() for sh in svc.shards))
    except Exception as e:  # anything not answering means not ready
        return JSONResponse({"ready": False, "error": f"{type(e).__name__}: {e}"[:300]},
                            status_code=503, headers={"Retry-After": "1"})
    if not svc.encoder_version:  # ready means lists carry the model name from now on
        svc.encoder_version = enc["model"]
    return {"ready": True, "model": enc["model"], "intent_model": enc["intent"], "device": enc["device"],
            "model_version": f"{enc['model']}@{svc.index_version}",
            "sequence_model": svc.sequence_version or "shipped",
            "items": ret["items"],
            "shards": len(svc.shards),
            "ranking": "ingress" if svc.view is not None else "retriever", "profile_reads": svc.args.profile_reads}
