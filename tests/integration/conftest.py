"""One real Ray + Serve cluster for the whole integration session, on a non-default port."""
from __future__ import annotations

import json
import os
import time
import uuid

import httpx
import pytest

PORT = 8765
METRICS_PORT = 8766  # Ray's Prometheus endpoint for the session cluster (``metrics_text``)
# The session server runs with API keys on, as production should: the shared client sends the
# all-classes key; tests of refusals build their own clients. Replicas inherit the environment
# of the process that starts Ray, so the keys are set before ray.init.
API_KEY = "test-key-all-classes-0123456789"
READ_KEY = "test-key-read-only-0123456789"
API_KEYS = [{"name": "test-all", "key": API_KEY, "classes": ["read", "write", "admin"], "rate_per_s": 100000},
            {"name": "test-reader", "key": READ_KEY, "classes": ["read"], "rate_per_s": 5}]


def pytest_collection_modifyitems(items):
    """Disruptive tests (faults, load, fuzzing) run last: their thousands of events move the shared
    graph's popularity and co-visit counts, which the ranking tests compare against the engine."""
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


@pytest.fixture(scope="session")
def read_key() -> str:
    return READ_KEY


def start_graph(args) -> None:
    """Ray, Serve and the graph on 127.0.0.1:PORT, ready to answer (also used to restart it)."""
    import ray
    from ray import serve

    from deployments.app import build_app

    from deployments.ray_private import local_init_kwargs

    ray.init(**local_init_kwargs(2, 512 * 1024**2, metrics_port=METRICS_PORT))
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app(args), name="ecrec", route_prefix="/")
    deadline = time.time() + 120
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=60) as c:
        while c.get("/readyz").status_code != 200:
            assert time.time() < deadline, "graph never became ready"
            time.sleep(0.5)


@pytest.fixture(scope="session")
def metrics_text():
    """``metrics_text(name, want, timeout_s)``: the session cluster's Prometheus samples of ``name``
    (``ray_<name>_total`` lines), polled until one contains ``want`` (Ray exports every ~10 s)."""
    def read(name: str, want: str = "", timeout_s: float = 60.0) -> list[str]:
        deadline = time.time() + timeout_s
        while True:
            try:
                text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
            except httpx.TransportError:  # the metrics agent still starting
                text = ""
            lines = [ln for ln in text.splitlines() if ln.startswith(f"ray_{name}")]
            if any(want in ln for ln in lines) or time.time() > deadline:
                return lines
            time.sleep(1.0)

    return read


@pytest.fixture
def restart_graph():
    """Shut Ray down entirely and start the graph again (same args, same port)."""
    def restart(args) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        start_graph(args)

    return restart


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")  # metrics polls wait ~1 s, not Ray's 10 s
    os.environ["ECREC_API_KEYS"] = json.dumps(API_KEYS)
    os.environ["ECREC_TEST_API_KEY"] = API_KEY
    import ray
    from ray import serve

    from deployments.config import AppArgs

    tmp = tmp_path_factory.mktemp("serve")
    args = AppArgs(index_dir=str(tmp / "index"), state_dir=str(tmp / "state"),
                   namespace=f"ecrec-test-{uuid.uuid4().hex[:8]}", explore_share=0.0,
                   encoder_max_replicas=1, num_shards=2, snapshot_every=5, sqlite_synchronous="NORMAL",
                   max_sentiment_texts=8, max_encoder_rows=40,
                   max_batch_size=3,  # the texts of one request are spread over several encoder batches
                   # an A/B test of two identical arms: every list carries its arm, rankings match the engine
                   ab_test={"arms": {"control": {}, "twin": {}}, "salt": "tests"},
                   drift_min_recent=20)
    start_graph(args)
    client = httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=60,
                          headers={"Authorization": f"Bearer {API_KEY}"})
    yield client, args
    client.close()
    serve.shutdown()
    ray.shutdown()


def follow_graph(rec, args) -> None:
    """The in-process ``Recommender`` takes what the graph's retrievers applied on top of the
    artifacts: the catalog board's item changes, counters, co-visit pairs and content edits (left by
    earlier tests), so the two rank from the same state. Call it before replaying a test's events
    on both (the counters and pairs of those then reach each side once)."""
    import ray

    board = ray.get_actor("ecrec-catalog-board", namespace=args.namespace)
    time.sleep(3 * args.sync_interval_s)  # the ingress flushes counters every 0.1 s
    _, rows, stats, (pos, pairs) = ray.get(board.sync.remote(0, -1, 0))
    seq = rec.engine.apply_log(rows, pairs, stats[1:] if stats else None) or 0
    while pairs:  # co-visit pairs come in batches
        _, _, _, (pos, pairs) = ray.get(board.sync.remote(seq, stats[0] if stats else -1, pos))
        rec.engine.apply_log([], pairs)
    rec.engine.apply_content_log(ray.get(board.sync_content.remote(0))[1])
