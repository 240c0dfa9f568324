"""Encoder deployment: text encoder + sentiment head (+ intent branch) in one batched forward pass."""
from __future__ import annotations

import asyncio
import logging
import os

from ray import serve

from deployments.config import AppArgs
from ecrec.sentiment import analyze_isolated

log = logging.getLogger(__name__)


@serve.deployment(name="Encoder")
class Encoder:
    """Batches concurrent texts (``@serve.batch``) and runs the model off the event loop."""

    def __init__(self, args: AppArgs):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from ecrec.encoder import EncoderConfig
        from ecrec.recommender import RecommenderConfig, load_analyzer

        cfg = RecommenderConfig(
            encoder=EncoderConfig(model=args.model, max_length=args.max_length, num_threads=args.encoder_threads),
            sentiment_head=args.sentiment_head, intent_head=args.intent_head)
        self.analyzer = load_analyzer(cfg, args.home())
        intent = self.analyzer.intent_head
        self.intent_version = intent.info.get("name", "intent") if intent is not None else None
        self.model_version = "+".join(
            [args.model, self.analyzer.head.info.get("name", "head")] + ([self.intent_version] if intent else []))
        self._lock = asyncio.Lock()  # one forward pass at a time per replica

    def reconfigure(self, user_config: dict) -> None:
        """Batching knobs change at run time (``user_config`` in the Serve config)."""
        if "max_batch_size" in user_config:
            self.analyze.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            self.analyze.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.003)
    async def analyze(self, texts: list[str]):
        """Each text: cleaned, split into clauses, embedded (``query`` role) and classified."""
        async with self._lock:  # one bad text fails itself, not the batch it shared
            return await asyncio.to_thread(analyze_isolated, self.analyzer.analyze, texts)

    async def embed_passages(self, texts: list[str]):
        async with self._lock:
            return await asyncio.to_thread(self.analyzer.encoder.encode, texts, "passage")

    def info(self) -> dict:
        return {"model": self.model_version, "dim": self.analyzer.encoder.dim, "intent": self.intent_version,
                "device": str(self.analyzer.encoder.device)}
