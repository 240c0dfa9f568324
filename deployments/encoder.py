"""Encoder deployment: text encoder + sentiment head (+ intent branch) in one batched forward pass."""
from __future__ import annotations

import asyncio
import logging
import os

from ray import serve

from deployments.config import AppArgs
from ecrec.text.sentiment import analyze_isolated

log = logging.getLogger(__name__)


@serve.deployment(name="Encoder")
class Encoder:
    """Batches concurrent texts (``@serve.batch``) and runs the model off the event loop."""

    def __init__(self, args: AppArgs, heads: tuple[str | None, str | None] | None = None):
        """``heads``: (sentiment, intent) to start with; a ``user_config`` that names heads wins (and
        one that names none, e.g. a serve config's own Encoder user_config, keeps these)."""
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from ecrec.text.encoder import EncoderConfig, TextEncoder

        from ecrec.text.encoder import auto_max_replicas, batch_sizes, resolve_device, threads_per_replica

        self.args = args
        threads = args.encoder_threads
        cores = len(os.sched_getaffinity(0))
        # build_graph resolves an unset maximum; a replica built some other way sizes it from its own node
        max_replicas = args.encoder_max_replicas or auto_max_replicas(threads, cores, args.encoder_num_gpus > 0,
                                                                      args.encoder_min_replicas)
        if args.encoder_num_gpus == 0:  # CPU replicas that may all land on this node share its cores
            threads = threads_per_replica(threads, max_replicas, cores)
            if threads < args.encoder_threads:
                log.info("encoder threads %d -> %d: %d replicas may share this node's %d cores", args.encoder_threads,
                         threads, max_replicas, cores)
        # sized for the device the encoder gets ("auto"), not for what the args asked: a replica
        # that asked for a GPU and sees none runs CPU batches
        self.default_batch, rows = batch_sizes(resolve_device().type == "cuda")
        self.encoder = TextEncoder(EncoderConfig(model=args.model, max_length=args.max_length, num_threads=threads,
                                                 quantize=args.encoder_quantize, batch_size=rows), args.home())
        self.analyzer, self.heads = None, None
        self.initial_heads = heads or (args.sentiment_head, args.intent_head)
        self._load_heads(*self.initial_heads)
        self._lock = asyncio.Lock()  # one forward pass at a time per replica

    def _load_heads(self, sentiment_head: str | None, intent_head: str | None) -> None:
        """Load the sentiment and intent heads onto the shared encoder, then swap them in with one
        assignment: a batch already running keeps the analyzer it started with."""
        from ecrec.text.sentiment import TextAnalyzer, head_path, intent_head_path, load_head

        if (sentiment_head, intent_head) == self.heads:
            return
        head = load_head(head_path(sentiment_head, self.args.model), self.encoder)
        intent_path = intent_head_path(intent_head, self.args.model)
        analyzer = TextAnalyzer(self.encoder, head, load_head(intent_path, self.encoder) if intent_path else None)
        intent = analyzer.intent_head
        intent_version = intent.info.get("name", "intent") if intent is not None else None
        model_version = analyzer.version
        self.analyzer, self.intent_version, self.model_version = analyzer, intent_version, model_version
        if self.heads is not None:
            log.info("encoder replica now serves %s", model_version)
        self.heads = (sentiment_head, intent_head)

    def reconfigure(self, user_config: dict) -> None:
        """Run-time settings from ``user_config`` (a redeploy that changes only these updates the
        running replicas in place, without restarting them): the batching knobs, and the sentiment
        and intent heads, loaded beside the serving ones and swapped in without dropping a request.
        A head left null keeps the constructor's (the app's args); "branch"/"probe"/"none" or a path
        name one explicitly."""
        # null or absent: the app's args, else this replica's default for its device
        self.max_batch_size = int(user_config.get("max_batch_size") or self.args.max_batch_size
                                  or self.default_batch)
        self.analyze.set_max_batch_size(self.max_batch_size)
        if "batch_wait_timeout_s" in user_config:
            self.analyze.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))
        # a head the user_config leaves unset (or null) is the one the replica was built with
        self._load_heads(user_config.get("sentiment_head") or self.initial_heads[0],
                         user_config.get("intent_head") or self.initial_heads[1])

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.003)
    async def analyze(self, texts: list[str]):
        """Each text: cleaned, split into clauses, embedded (``query`` role) and classified."""
        async with self._lock:  # one bad text fails itself, not the batch it shared
            return await asyncio.to_thread(analyze_isolated, self.analyzer.analyze, texts)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.003)
    async def analyze_lists(self, lists: list[list[str]]):
        """Whole requests (``POST /v1/sentiment`` with several texts): each request's texts go
        through the same length-sorted forward passes as one ``TextAnalyzer.analyze`` call in
        process, instead of one Serve call per text batched with whatever else arrived."""
        flat = [t for texts in lists for t in texts]
        async with self._lock:
            done = await asyncio.to_thread(analyze_isolated, self.analyzer.analyze, flat)
        out, pos = [], 0
        for texts in lists:
            out.append(done[pos : pos + len(texts)])
            pos += len(texts)
        return out

    async def embed_passages(self, texts: list[str]):
        async with self._lock:
            return await asyncio.to_thread(self.encoder.encode, texts, "passage")

    def info(self) -> dict:
        return {"model": self.model_version, "dim": self.encoder.dim, "intent": self.intent_version,
                "device": str(self.encoder.device)}
