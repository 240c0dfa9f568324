"""Operator routes of the ingress: reload, online metrics, drift, health (a mixin of ``Ingress``)."""
import asyncio
import time

from fastapi import Query
from fastapi.responses import JSONResponse
from ray.exceptions import RayTaskError

from deployments.http_app import ApiError, app


class AdminRoutes:
    @app.post("/v1/admin/reload")
    async def admin_reload(self) -> dict:
        """Swap the models and index artifact the long-lived actors hold (retrievers, and with
        ``colocate_retrieval`` each ingress replica's own catalog view), without recreating them.
        This replica's view is rebuilt before the answer; the other replicas see the board's new
        reload generation at their next catalog sync and rebuild theirs."""
        import ray

        # every ingress replica's pool, found by name, not only this replica's
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == self.args.namespace and a["name"].startswith("ecrec-retriever-")]
        pool = [ray.get_actor(n, namespace=self.args.namespace) for n in names] or self.retrievers
        views = await asyncio.gather(*(r.reload.remote() for r in pool))
        # only after the retrievers took it: a broken artifact fails here, before any ingress tries it
        generation = await self.board.bump_generation.remote()
        if self.view is not None:
            await self._reload_view(generation)
        return {"retrievers": len(views), "ingress_view": self.view is not None,
                "artifact_id": views[0]["artifact_id"] if views else None}

    @app.get("/v1/admin/metrics/summary")
    async def metrics_summary(self, window_s: float = Query(3600.0, gt=0, le=86400)) -> dict:
        """Online metrics over the last ``window_s`` seconds, summed over every shard: CTR and CVR
        by source, position bucket and arm, coverage, cold-start share, sentiment mix
        (``ecrec.operations.attribution``; the same counts are in Prometheus)."""
        from ecrec.operations.attribution import merge, report

        now = time.time()
        windows = await asyncio.gather(*(sh.metrics_window.remote(window_s, now) for sh in self.shards))
        catalog = (await self.retriever.info.remote())["items"]
        return {**report(merge(windows), catalog, window_s), "model_version": self._version()}

    @app.get("/v1/admin/drift")
    async def drift_scores(self) -> dict:
        """Drift of recent texts and events against the reference (``ecrec.operations.drift``):
        scores, the alarms raised and why; ``ready`` is false until enough texts arrived."""
        return await self.drift.scores.remote()

    @app.get("/v1/admin/drift/history")
    async def drift_history(self) -> dict:
        """Drift scores over the last day: a point a minute and one at every alarm change
        (``ecrec.operations.drift_history``; ``ecrec drift-plot`` draws them)."""
        return {"points": await self.drift.history_points.remote()}

    @app.post("/v1/admin/drift/reference")
    async def drift_refit(self) -> dict:
        """Make the recent window the drift reference (after a deliberate change: a new market,
        a retrained model)."""
        try:
            return await self.drift.refit.remote()
        except RayTaskError as e:
            if isinstance(e.cause, ValueError):
                raise ApiError(409, str(e.cause)) from e
            raise

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self):
        try:
            # asyncio.timeout, not wait_for(gather): a request cancelled meanwhile (a poll that gave
            # up while the graph starts) left wait_for's gather unread, which asyncio logs as a
            # "_GatheringFuture exception was never retrieved" traceback
            async with asyncio.timeout(5):
                enc, ret, *_ = await asyncio.gather(
                    self.encoder.info.remote(), *(r.info.remote() for r in self.retrievers),
                    self.board.last_seq.remote(), *(sh.ping.remote() for sh in self.shards))
        except Exception as e:  # anything not answering means not ready
            return JSONResponse({"ready": False, "error": f"{type(e).__name__}: {e}"[:300]},
                                status_code=503, headers={"Retry-After": "1"})
        if not self.encoder_version:  # ready means lists carry the model name from now on
            self.encoder_version = enc["model"]
        return {"ready": True, "model": enc["model"], "intent_model": enc["intent"], "device": enc["device"],
                "model_version": f"{enc['model']}@{self.index_version}",
                "sequence_model": self.sequence_version or "shipped",
                "items": ret["items"],
                "shards": len(self.shards),
                "ranking": "ingress" if self.view is not None else "retriever", "profile_reads": self.args.profile_reads}
