"""The Serve graph, built in one place: ``serve run deployments.app:build_app key=value``.

    HTTP -> Ingress -+-> Encoder (batched e5 + sentiment head, autoscaled, GPU if configured)
                     +-> ProfileShardActor x N (durable, by stable hash of user id: the writes)
                     +-> profile store (reads: each profile as of its newest write, no actor hop)
                     +-> Retriever x R actors (FAISS + ranking; catalog changes pulled from CatalogBoard)

On a small catalog (``colocate_retrieval`` "auto") each ingress replica also holds the catalog
view and ranks itself, so GET recommendations is the proxy's hop and nothing else.
"""
from __future__ import annotations

from ray.serve import Application

from deployments.config import AppArgs
from deployments.encoder import Encoder
from deployments.ingress import Ingress
from ecrec.text.encoder import auto_max_replicas, cpu_replica_env
from ecrec.retrieval.index import choose_colocation


def build_app(args: dict | AppArgs) -> Application:
    """The graph for ``args``: the application builder of ``serve run``/``serve deploy`` (Serve
    calls it with exactly one argument, the config's ``args``)."""
    return build_graph(args)


def build_graph(args: dict | AppArgs, encoder_user_config: dict | None = None) -> Application:
    """The graph for ``args``. ``encoder_user_config`` overrides the Encoder's user_config, as a serve
    config's ``deployments: [{name: Encoder, user_config: …}]`` does."""
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    if args.encoder_max_replicas is None:  # the replicas see the number their threads are sized for
        args = args.model_copy(update={"encoder_max_replicas": auto_max_replicas(
            args.encoder_threads, _node_cpus(), args.encoder_num_gpus > 0, args.encoder_min_replicas)})
    from deployments.index_build import ensure_artifact

    index_dir = ensure_artifact(args)
    import json

    from deployments.index_build import ensure_content

    manifest = json.loads((index_dir / "manifest.json").read_text())
    ensure_content(args, manifest["dim"])
    # the shards and the ingress see the decision, not "auto"
    args = args.model_copy(update={"colocate_retrieval": choose_colocation(
        args.colocate_retrieval, manifest["items"], manifest["dim"])})

    import ray

    if ray.is_initialized():  # refuse a mismatched state directory here, before any replica starts
        from deployments.profiles import check_layout

        check_layout(args, manifest["dim"])
    core = args.model_copy(update={"sentiment_head": None, "intent_head": None})  # heads: given apart
    encoder = Encoder.options(
        autoscaling_config={
            "min_replicas": args.encoder_min_replicas,
            "initial_replicas": max(1, args.encoder_min_replicas),
            "max_replicas": args.encoder_max_replicas,
            "target_ongoing_requests": args.encoder_target_ongoing_requests,
            "upscale_delay_s": 5, "downscale_delay_s": 60,
        },
        ray_actor_options={"num_cpus": args.encoder_num_cpus, "num_gpus": args.encoder_num_gpus,
                           **_encoder_runtime_env(args.encoder_num_gpus == 0)},
        max_ongoing_requests=args.max_ongoing_requests,
        max_queued_requests=args.max_queued_requests,
        # The heads also travel in user_config: a redeploy whose config changes only the Encoder's
        # user_config (a retrained head) reconfigures the running replicas in place. Changed args
        # replace the replicas instead (Serve starts the new ones before it stops the old).
        user_config={"max_batch_size": args.max_batch_size, "batch_wait_timeout_s": args.batch_wait_timeout_s,
                     "sentiment_head": args.sentiment_head, "intent_head": args.intent_head,
                     **(encoder_user_config or {})},
    ).bind(core, (args.sentiment_head, args.intent_head))
    return Ingress.options(
        num_replicas=args.ingress_replicas,
        ray_actor_options={"num_cpus": args.ingress_num_cpus},
        # Past max_in_flight the ingress itself answers 503 + Retry-After at once; the proxy holds a
        # short queue before it and answers 503 + Retry-After past that, so nothing waits long.
        max_ongoing_requests=2 * args.max_in_flight,
        max_queued_requests=args.max_in_flight,
        backpressure_config={"status_code": 503, "retry_after_s": 1},
    ).bind(core, encoder)


def _node_cpus() -> int:
    """Ray's CPU count of the node building the app (it follows cgroup quotas and ``--num-cpus``),
    or this process's cores without Ray."""
    import os

    import ray

    if ray.is_initialized():
        node = ray.get_runtime_context().get_node_id()
        cpus = next((n["Resources"].get("CPU") for n in ray.nodes() if n["NodeID"] == node), None)
        if cpus:
            return int(cpus)
    return len(os.sched_getaffinity(0))


def _encoder_runtime_env(on_cpu: bool) -> dict:
    """The Encoder's ``runtime_env`` option: the app's own runtime_env (Serve gives a deployment that
    names one nothing else) with the CPU replica's variables added; an app's own values win."""
    env = cpu_replica_env(on_cpu)
    if not env:
        return {}
    import ray

    parent = dict(ray.get_runtime_context().runtime_env or {}) if ray.is_initialized() else {}
    parent["env_vars"] = {**env, **(parent.get("env_vars") or {})}
    return {"runtime_env": parent}
