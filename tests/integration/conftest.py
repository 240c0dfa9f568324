"""One real Ray + Serve cluster for the whole integration session, on a non-default port."""
from __future__ import annotations

import os
import time
import uuid

import httpx
import pytest

PORT = 8765


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from deployments.app import build_app
    from deployments.config import AppArgs

    tmp = tmp_path_factory.mktemp("serve")
    args = AppArgs(index_dir=str(tmp / "index"), state_dir=str(tmp / "state"),
                   namespace=f"ecrec-test-{uuid.uuid4().hex[:8]}", explore_share=0.0,
                   encoder_max_replicas=1, num_shards=2, snapshot_every=5, sqlite_synchronous="NORMAL",
                   max_sentiment_texts=8)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 1024**2,
             _node_ip_address="127.0.0.1")
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app(args), name="ecrec", route_prefix="/")
    client = httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=60)
    deadline = time.time() + 120
    while client.get("/readyz").status_code != 200:
        assert time.time() < deadline, "graph never became ready"
        time.sleep(0.5)
    yield client, args
    client.close()
    serve.shutdown()
    ray.shutdown()
