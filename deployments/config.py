"""``AppArgs``: everything the Serve graph is configured by (CLI ``key=value`` or a config file)."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ecrec.retrieval.catalog import DEMO_CATALOG
from ecrec.content.library import DEMO_CONTENT
from ecrec.text.encoder import default_home


class AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # data and state
    catalog: str = Field(default=str(DEMO_CATALOG), description="catalog used when the index artifact is missing")
    index_dir: str | None = Field(default=None, description="index artifact (default $ECREC_HOME/index/"
                                  "<catalog>-<model>, rebuilt when the catalog or model changes)")
    content: str = Field(default=str(DEMO_CONTENT), description="seed guides/articles (JSONL) embedded into the "
                         "content index at deploy; '' for none. API edits are kept on top of it")
    state_dir: str | None = Field(default=None, description="durable stores (default $ECREC_HOME/state, "
                                  "state-<model> for other models: profiles live in one model's space)")
    namespace: str = Field(default="ecrec", description="Ray namespace of the shard and catalog actors")
    # models
    model: str = Field(default="e5-small", description="e5-small (zh+en) or minilm (en)")
    sentiment_head: str | None = Field(
        default=None, description="unset: the shipped fine-tuned branch; 'probe'; or a .safetensors/.npz path")
    intent_head: str | None = Field(
        default=None, description="unset: the shipped intent branch; 'none': no intents; or a .safetensors path")
    sequence_model: str | None = Field(
        default=None, description="unset: the shipped sequence retriever; 'none': off; or a .safetensors path")
    max_length: int = Field(default=128, ge=8, le=512)
    # encoder deployment
    encoder_min_replicas: int = Field(default=1, ge=0)
    encoder_max_replicas: int | None = Field(default=None, ge=1, description=(
        "unset: on CPU, replicas for half this node's cores at encoder_threads each (1 on 2 cores; "
        "ecrec.text.encoder.auto_max_replicas); on GPU, 2"))
    encoder_target_ongoing_requests: float = Field(default=8, gt=0)
    encoder_num_cpus: float = Field(default=0.5, ge=0)
    encoder_num_gpus: float = Field(default=0, ge=0, description="a GPU or a fraction on a cluster")
    encoder_threads: int = Field(default=2, ge=1, description="torch CPU threads per encoder replica (on CPU, "
                                 "at most the node's cores / encoder_max_replicas)")
    encoder_quantize: str = Field(default="none", pattern="^(none|int8)$",
                                  description="int8: dynamic int8 Linear layers on CPU, 1.5-2x the texts/s of fp32 "
                                              "but sentiment labels agree with fp32 on only 92 % (BENCHMARKS.md, "
                                              "text-path): off by default")
    max_batch_size: int | None = Field(default=None, ge=1, description=(
        "texts per encoder batch; unset: each replica's default for the device it gets, 16 on CPU, 64 on a "
        "GPU (ecrec.text.encoder.batch_sizes)"))
    batch_wait_timeout_s: float = Field(default=0.003, ge=0)
    # profiles
    num_shards: int = Field(default=2, ge=1, le=1024)
    store: str = Field(default="sqlite", pattern=r"^(sqlite|(redis|rediss|unix)://\S+)$",
                       description="profiles' durable store: 'sqlite' (a file per shard in state_dir, one machine) "
                                   "or redis://host:port/db (any node; keys under the namespace)")
    profile_cache_mb: float | None = Field(default=512.0, gt=0, description="memory budget of the profiles one "
                                           "shard holds (least recently used leave first; None: no bound)")
    snapshot_every: int = Field(default=50, ge=1)
    sqlite_synchronous: str = Field(default="FULL", pattern="^(FULL|NORMAL|EXTRA)$")
    # retrieval
    index_factory: str = Field(default="auto", min_length=1, max_length=100,
                               description="FAISS factory of a newly built index artifact, or 'auto': exact up to "
                                           "200k items, HNSW32 above (BENCHMARKS.md, index-scale)")
    retriever_replicas: int = Field(default=1, ge=1)
    retriever_num_cpus: float = Field(default=0.2, ge=0)
    sync_interval_s: float = Field(default=0.2, gt=0, le=1.0, description="catalog changes reach replicas within this")
    explore_share: float = Field(default=0.1, ge=0, le=0.5)
    colocate_retrieval: bool | None = Field(default=None, description=(
        "each ingress replica also holds the catalog, index and ranker: GET recommendations ranks where it "
        "is received, with no actor hop (memory: one index per ingress replica). Unset: on while that copy "
        "is small, up to ~43k items at dim 384 (ecrec.retrieval.index.choose_colocation)"))
    profile_reads: str = Field(default="store", pattern="^(store|shard)$", description=(
        "where the ingress reads a profile to rank: 'store', the profile as the store holds it after its "
        "newest write (Redis from any node, SQLite from the shard's node; the shard where the store cannot "
        "say), or 'shard', always the shard actor"))
    seed: int = 0
    # ingress and limits
    ingress_replicas: int = Field(default=1, ge=1)
    ingress_num_cpus: float = Field(default=0.2, ge=0)
    max_ongoing_requests: int = Field(default=64, ge=1, description="per encoder replica")
    max_queued_requests: int = Field(default=256, ge=-1, description="encoder queue; past it: 503 + Retry-After")
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_sentiment_texts: int = Field(default=64, ge=1)
    max_encoder_rows: int = Field(default=256, ge=17, description="texts plus clauses one request may encode")
    max_future_skew_s: float = Field(default=300.0, ge=0, description="events stamped later than now + this: 422")
    max_in_flight: int = Field(default=32, ge=1, description="requests one ingress replica works on at once; "
                               "past it: 503 + Retry-After (the proxy queues as many more at most)")
    read_requires_key: bool = Field(default=False, description="with API keys set, read routes need one too")
    rate_limit_per_s: float = Field(default=200.0, ge=0, description="per key (or client address for open "
                                    "reads) per ingress replica; 0: off; past it: 429 + Retry-After")
    record_impressions: bool = Field(default=True, description="served items count as impressions")
    drift_reference: str | None = Field(default=None, description=(
        "a saved drift reference (`ecrec drift-reference`); unset: the first drift_min_recent texts after start"))
    drift_min_recent: int = Field(default=200, ge=20, description="recent texts before drift is judged")
    drift_window: int = Field(default=2000, ge=20, description="recent texts (and item events) the monitor keeps")
    ab_test: dict | str | None = Field(default=None, description=(
        "A/B test of ranking settings: {\"arms\": {\"control\": {}, \"b\": {\"explore_share\": 0.2}}, \"salt\": \"…\"} "
        "(a JSON string on the command line); shoppers split by a stable hash of user_id"))
    # search (ecrec.search.hybrid.SearchConfig)
    search_fusion: str = Field(default="rrf", pattern="^(rrf|blend)$", description="rank fusion of BM25 and vectors")
    search_rrf_c: float = Field(default=60.0, gt=0)
    search_semantic_weight: float = Field(default=1.0, ge=0, description="the vector half's weight (BM25: 1)")
    search_personal_weight: float = Field(default=2.0, ge=0, description="the profile re-rank's weight; 0: off")
    # customer-service chat
    chat_idle_s: float = Field(default=1800.0, gt=0, description="a chat session idle longer than this expires")
    chat_recommendations: int = Field(default=5, ge=1, le=20, description="items a product question answers with")

    @field_validator("ab_test")
    @classmethod
    def _experiment(cls, v):
        from ecrec.operations.experiments import Experiment

        Experiment.parse(v)  # raises ValueError saying what is wrong
        return v

    def experiment(self):
        from ecrec.operations.experiments import Experiment

        return Experiment.parse(self.ab_test)

    def profile_config(self):
        """The app's ``ProfileConfig``: the profile rules and event weights (``interaction``) that
        the shards, the ingress and the rankers read, with this deploy's clock skew."""
        from ecrec.profiles.profile import ProfileConfig

        return ProfileConfig(max_future_skew_s=self.max_future_skew_s)

    def home(self) -> Path:
        return default_home()

    def resolved_index_dir(self) -> Path:
        if self.index_dir:
            return Path(self.index_dir)
        # the shipped serve config names the demo catalog by a relative path: the same folder as make serve's
        stem = "demo" if Path(self.catalog).resolve() == DEMO_CATALOG.resolve() else Path(self.catalog).stem
        return self.home() / "index" / (stem if self.model == "e5-small" else f"{stem}-{self.model}")

    def resolved_content_dir(self) -> Path:
        stem = (("demo" if Path(self.content).resolve() == DEMO_CONTENT.resolve() else Path(self.content).stem)
                if self.content else "none")
        return self.home() / "content" / (stem if self.model == "e5-small" else f"{stem}-{self.model}")

    def resolved_state_dir(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir)
        return self.home() / ("state" if self.model == "e5-small" else f"state-{self.model}")
