"""The HTTP ingress (FastAPI on Serve): the replica's state and the services its routes call
(encoder, profile shards, retrievers or the replica's own catalog view, metrics, the shown-list
buffers); the routes are ``APIRouter``s in ``routes_*`` and the app is built by
``http_app.build_http_app``.

The app is late-bound, ``@serve.ingress()`` without an app: Serve 2.60 calls the class's
``__serve_build_asgi_app__`` on the replica after ``__init__`` (the ``serve.ingress`` docstring),
so the app is built from this replica's own state: its guards get their limits and API keys as
constructor arguments, and its routes get this object as their services (``app.state``, read by
the routes' ``Depends(services)``). Nothing is shipped by value and no module global changes. A
builder function (``serve.ingress(build)``) runs before the replica is reachable from it through
public APIs (``serve.get_replica_context().servable_object`` is set only after initialisation),
so it would need a module global to find this object: the hook is the public way."""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import numpy as np
import ray
from ray import serve
from ray.exceptions import RayActorError

from deployments.catalog_board import get_board
from deployments.config import AppArgs
from deployments.drift import get_drift
from deployments.http_app import build_http_app
from deployments.profiles import get_shards
from deployments.retriever import make_retrievers
from ecrec.operations.experiments import DEFAULT_ARM
from ecrec.operations.security import Gate, RateLimiter, keys_from_env
from ecrec.profiles.reader import ASK_SHARD, ProfileReader
from ecrec.profiles.shard import shard_of

log = logging.getLogger(__name__)


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """One ingress replica's state and the services of its routes: it provides each route family's
    ``Protocol`` (``routes_admin.AdminServices``, ``routes_catalog.CatalogServices``,
    ``routes_chat.ChatServices``, ``routes_recommend.RecommendServices``); the public names below
    are what the routes use, the underscored ones its own background work."""

    def __init__(self, args: AppArgs, encoder):
        import itertools

        from ray.util import metrics

        self.args, self.encoder = args, encoder
        self.retrievers = make_retrievers(args, serve.get_replica_context().replica_id.unique_id)
        self._next_retriever = itertools.cycle(self.retrievers)
        manifest = json.loads((args.resolved_index_dir() / "manifest.json").read_text())
        self.shards = get_shards(args, manifest["dim"])
        self.board = get_board(args)
        # Profiles are read from their store, without a call to their shard, wherever this replica
        # can reach it (``ecrec.profiles.reader``); with colocate_retrieval they are also ranked
        # here, by this replica's own catalog view: GET recommendations is then one hop, the proxy's.
        self.reader = ProfileReader(args.store, args.resolved_state_dir(), args.num_shards, args.namespace)
        self.node_id = ray.get_runtime_context().get_node_id()
        if args.store == "sqlite":
            self._read_shards_on(self.node_id, ray.get([sh.settings.remote() for sh in self.shards]))
        self._nodes_at = time.monotonic()
        self.view, self.view_generation, self._view_lock = None, None, asyncio.Lock()
        self._failed_generation = (None, 0.0)  # a rebuild that failed, and when: tried again after 30 s
        if args.colocate_retrieval:
            from deployments.retriever import CatalogView

            self.view_generation = ray.get(self.board.get_generation.remote())  # read before the view is built
            self.view = CatalogView(args)
        self.drift = get_drift(args)
        from ecrec.chat.upset import UpsetDetector

        self.upset = UpsetDetector.load(args.model, manifest["dim"])
        # every ecrec metric carries model_version: "<encoder+heads>@<index artifact>" (``model_version``)
        self.m_events = metrics.Counter("ecrec_events", "events applied", tag_keys=("type", "model_version"))
        self.m_sentiment = metrics.Counter("ecrec_sentiment", "texts classified", tag_keys=("label", "model_version"))
        self.m_recs = metrics.Counter("ecrec_recommendations", "recommendation lists served",
                                      tag_keys=("model_version",))
        self.m_impr = metrics.Counter("ecrec_impressions", "items shown", tag_keys=("model_version",))
        self.m_chat = metrics.Counter("ecrec_chat_turns", "chat turns answered", tag_keys=("route", "model_version"))
        self.m_intent = metrics.Counter("ecrec_intents", "texts by customer-service intent ('none': not a "
                                        "service request)", tag_keys=("label", "model_version"))

        keys = keys_from_env()
        self.gate = Gate(keys, args.read_requires_key) if keys else None  # None: every route is open
        self.limiter = RateLimiter(args.rate_limit_per_s)
        if not keys:
            log.warning("no API key set (ECREC_API_KEY): every route is open; bind 127.0.0.1 only")
        # Impressions and interaction counts are soft signals: buffered and flushed every 100 ms
        # as one call per shard, instead of two extra remote calls on every request.
        self._served: dict[int, list] = {}  # shard -> lists shown (attribution, impressions)
        from ecrec.operations.retrain_policy import sequence_version

        # the ranking side of the version: the index artifact, and the sequence retriever when it
        # is not the shipped one ("<artifact 8 hex>+sequence-<run>", "+none" when it is off)
        self.sequence_version = sequence_version(args.sequence_model)
        self.index_version = "+".join(v for v in ((manifest.get("artifact_id") or "")[:8], self.sequence_version) if v)
        self.encoder_version = ""  # the encoder's model + heads: the last analysis', refreshed every 10 s
        self._version_at = 0.0
        self.experiment = args.experiment()  # A/B arms of the ranking, or None
        self.interactions: list = []  # (item id, weight, strong?, co-visit): the board's, flushed
        self._shown: list = []
        self._drift_texts: list = []  # (float16 vector, sentiment, intent, language) for the drift monitor
        self._drift_items: list = []
        self._troubles: set[str] = set()  # problems of the background loop already logged (``_warn_once``)
        loop = asyncio.get_event_loop()
        self._flusher = loop.create_task(self._flush_forever())
        self._view_sync = loop.create_task(self._sync_view_forever()) if self.view is not None else None

    def __serve_build_asgi_app__(self):
        """This replica's app (Serve calls it once, after ``__init__``): its routes call this object."""
        return build_http_app(self, max_body_bytes=self.args.max_body_bytes, max_in_flight=self.args.max_in_flight,
                              gate=self.gate, limiter=self.limiter)

    async def _sync_view_forever(self) -> None:
        """This replica's catalog view follows the board (item changes, counters, co-visits, content)
        every ``sync_interval_s``, in one call; a new reload generation rebuilds it, beside the
        serving one, and swaps it in."""
        while True:
            v = self.view
            try:
                generation, items, content = await self.board.sync_view.remote(v.sync_args(), v.content_sync_args())
                failed, at = self._failed_generation
                if self._newer(generation) and (generation != failed or time.monotonic() - at > 30.0):
                    try:
                        await self.reload_view(generation)
                    except Exception:  # a broken artifact: the old view serves and keeps syncing
                        log.exception("rebuilding the catalog view for reload %s failed; trying again in 30 s",
                                      generation)
                        self._failed_generation = (generation, time.monotonic())
                if self.view is v:  # (a new view synced itself when it was built)
                    if (items[0] != v.epoch or content[0] != v.content_epoch
                            or len(items[1]) + len(content[1]) > 64):  # an artifact reload or a bulk import
                        await asyncio.to_thread(self._apply_view, v, items, content)
                    else:
                        self._apply_view(v, items, content)
            except Exception:  # the board restarting: try again next tick
                log.exception("catalog sync failed")
            await asyncio.sleep(v.interval)

    @staticmethod
    def _apply_view(v, items, content) -> None:
        v.apply(*items)
        v.apply_content(*content)

    def _newer(self, generation) -> bool:
        """A reload generation after this view's: another board (restarted), or more reloads."""
        have = self.view_generation
        return have is None or generation[0] != have[0] or generation[1] > have[1]

    async def reload_view(self, generation) -> None:
        """Rebuild the catalog view for reload ``generation`` (once: the admin route and the sync
        loop may both see it)."""
        from deployments.retriever import CatalogView

        async with self._view_lock:
            if not self._newer(generation):
                return
            new = await asyncio.to_thread(CatalogView, self.args)  # reads the artifact and the models again
            old, self.view, self.view_generation = self.view, new, generation
            old.stop()

    async def _check_store_reach(self) -> None:
        """Which shards' stores this replica reads: all on Redis; with SQLite, the shards running on
        this node (checked every 5 s: a shard Ray restarted elsewhere is read through its actor)."""
        if self.args.store != "sqlite" or time.monotonic() - self._nodes_at < 5.0:
            return
        self._nodes_at = time.monotonic()
        self._read_shards_on(self.node_id, await asyncio.gather(*(sh.settings.remote() for sh in self.shards)))

    def _read_shards_on(self, node_id: str, settings: list[dict]) -> None:
        """Read the stores of the shards whose ``settings`` say they run on ``node_id`` (a shard of
        an earlier ecrec does not say: it is read through its actor)."""
        self.reader.set_readable(i for i, s in enumerate(settings) if s.get("node_id") == node_id)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            try:
                self._flush()
            except Exception:  # soft signals: a batch lost to a failing actor is not retried
                log.exception("flushing impressions failed")
            try:  # bounded: a shard restarting must not hold up the flushes
                await asyncio.wait_for(self._check_store_reach(), 2.0)
                self._all_clear("shards", "the profile shards answer again")
            except Exception as e:  # a shard restarting or busy: the last answer stands until the next check
                self._warn_once("shards", "the profile shards do not say where they run (%s: %s); profiles are "
                                "read through the shard actors meanwhile. If this lasts, see `serve status` and the "
                                "ProfileShard actors' logs", type(e).__name__, e)
            # a switch seen even without text traffic; until the encoder first answers, every tick (lists
            # were labelled "@<index>" without the model for the first ~10 s)
            if not self.encoder_version or time.monotonic() - self._version_at > 10.0:
                self._version_at = time.monotonic()
                try:  # bounded: a busy encoder must not hold up the flushes
                    self.encoder_version = (await asyncio.wait_for(self.encoder.info.remote(), 2.0))["model"]
                    self._all_clear("encoder", "the encoder answers again (%s)", self.encoder_version)
                except Exception as e:  # an encoder restarting: the version stays the last one seen
                    if self.encoder_version:  # (never read yet: the encoder is still loading its model at start)
                        self._warn_once("encoder", "the encoder does not answer (%s: %s); metrics keep model version "
                                        "%r. If this lasts, see `serve status` and the Encoder replicas' logs",
                                        type(e).__name__, e, self.encoder_version)

    def _warn_once(self, key: str, message: str, *args) -> None:
        """A problem of the background loop, logged when it starts, not at every retry."""
        if key not in self._troubles:
            self._troubles.add(key)
            log.warning(message, *args)

    def _all_clear(self, key: str, message: str, *args) -> None:
        """The problem ``key`` is over: said once, if it was logged."""
        if key in self._troubles:
            self._troubles.discard(key)
            log.info(message, *args)

    def model_version(self, analysis=None) -> str:
        """The model version on metrics and attributed lists: the encoder's model + heads (the one
        that analysed ``analysis``, else the last seen) and the first 8 hex of the index artifact."""
        if analysis is not None and analysis.model:
            self.encoder_version = analysis.model
        return f"{self.encoder_version}@{self.index_version}"

    def _flush(self) -> None:
        batches, self._served = self._served, {}
        for idx, batch in batches.items():
            self.shards[idx].served_many.remote(batch)
        if self.interactions or self._shown:
            inter, shown, self.interactions, self._shown = self.interactions, self._shown, [], []
            self.board.note.remote(inter, shown)
        if self._drift_texts or self._drift_items:
            texts, items, self._drift_texts, self._drift_items = self._drift_texts, self._drift_items, [], []
            self.drift.observe.remote(texts, items, self.model_version())

    def observe(self, analysis=None, item_id: str | None = None) -> None:
        """What the drift monitor compares with its reference: each text, and each item event."""
        if analysis is not None:
            intent = analysis.intent.label if analysis.intent is not None else None
            if intent is not None:
                self.m_intent.inc(tags={"label": intent, "model_version": self.model_version(analysis)})
            self._drift_texts.append((analysis.vector.astype(np.float16), analysis.sentiment.label, intent,
                                      analysis.language))
        if item_id is not None:
            self._drift_items.append(item_id)

    async def encoder_call(self, method: str, *args):
        """Encoder calls are pure, so one that dies with its replica is sent again once: Serve
        routes it to another replica or to the one replacing it."""
        try:
            return await getattr(self.encoder, method).remote(*args)
        except RayActorError:
            log.warning("encoder replica died during %s; retrying once", method)
            return await getattr(self.encoder, method).remote(*args)

    def item_vector(self, item_id: str):
        """An awaitable of the item's vector (None: not in the catalog), from this replica's view
        when it holds one, else a retriever."""
        if self.view is None:
            return self.retriever.item_vector.remote(item_id)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(self.view.vector_of(item_id))
        return fut

    def analyze(self, text: str):
        """An awaitable of the encoder's analysis of ``text``, started now."""
        return asyncio.ensure_future(self.encoder_call("analyze", text))

    @property
    def retriever(self):
        """Round-robin over this replica's retriever pool."""
        return next(self._next_retriever)

    def shard(self, user_id: str):
        return self.shards[shard_of(user_id, len(self.shards))]

    def _profile_arg(self, user_id: str | None):
        """``user_id``'s profile for ranking: a ``UserProfile`` read from the store, None (no profile),
        or, where the store cannot say (``profile_reads="shard"``, a SQLite shard on another node, no
        current head), an ObjectRef of its shard's answer (the stored bytes), which a retriever
        call resolves on the way and this replica awaits only when it ranks itself."""
        if not user_id:
            return None
        if self.args.profile_reads == "store":
            got = self.reader.read(user_id)
            if got is not ASK_SHARD:
                return got
        return self.shard(user_id).get_blob.remote(user_id)

    def remote_profile(self, user_id: str | None):
        """``_profile_arg`` as an argument for another actor: stored bytes, an ObjectRef or None."""
        return self._for_remote(self._profile_arg(user_id))

    @staticmethod
    def _for_remote(profile):
        """A profile as another actor takes it: a ``UserProfile`` as its ~4 KB stored bytes
        (decoded once over there); an ObjectRef or None as it is."""
        return profile.stored_bytes() if profile is not None and not isinstance(profile, ray.ObjectRef) else profile

    async def recommend(self, user_id, k, filters, text_vec=None, text=None, explain=False, source=None,
                        product_answer=False):
        """(cold start?, items with their 1-based ``position``, the list's request id). ``source``
        names where the list is shown for attribution (a chat answer), else each item's own source.
        ``product_answer``: a chat product question's items (``CatalogEngine.product_answer``), and
        a fourth value, whether the stated price was dropped because nothing met it."""
        arm = self.experiment.arm_of(user_id) if self.experiment else None
        profile = self._profile_arg(user_id)
        relaxed = False
        if self.view is not None:  # ranked here: no actor hop at all when the store had the profile
            if isinstance(profile, ray.ObjectRef):
                profile = await profile
            if product_answer:
                cold, items, relaxed = self.view.product_answer(profile, k, filters, text_vec, text, arm=arm)
            else:
                cold, items = self.view.rank(profile, k, filters, text_vec, text, arm=arm)
        elif product_answer:
            cold, items, relaxed = await self.retriever.product_answer.remote(self._for_remote(profile), k, filters,
                                                                              text_vec, text, None, arm)
        else:
            cold, items = await self.retriever.recommend.remote(self._for_remote(profile), k, filters, text_vec,
                                                                text, None, arm)
        for pos, i in enumerate(items, start=1):
            i["position"] = pos
            if not explain:
                del i["parts"]
        self.m_recs.inc(tags={"model_version": self.model_version()})
        request_id = self.served_list(user_id, [(i["item_id"], source or i["source"]) for i in items], cold,
                                      impressions=True, arm=arm)
        return (cold, items, request_id, relaxed) if product_answer else (cold, items, request_id)

    def served_list(self, user_id: str | None, items: list[tuple[str, str]], cold: bool,
                    impressions: bool = False, arm: str | None = None) -> str:
        """Queue a shown list for its user's shard (attribution, and with ``impressions`` the
        profile's impressions; flushed every 100 ms) and return its request id, which events may
        name to be attributed to it."""
        request_id = uuid.uuid4().hex
        idx = shard_of(user_id, len(self.shards)) if user_id else 0
        impressions = bool(impressions and user_id and items and self.args.record_impressions)
        self._served.setdefault(idx, []).append((request_id, user_id, items, time.time(), arm or DEFAULT_ARM,
                                                 self.model_version(), cold, impressions))
        if impressions:
            self._shown.extend(i for i, _ in items)
            self.m_impr.inc(len(items), tags={"model_version": self.model_version()})
        return request_id
