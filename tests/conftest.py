"""Shared fixtures. Unit tests never start Ray; the real model is loaded once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ECREC_DATA", ROOT.parent / "shared" / "data"))


def _skip_or_fail_for_data(why: str):
    """Tests that need the shared data skip without it; CI (ECREC_REQUIRE_DATA=1) fails instead."""
    if os.environ.get("ECREC_REQUIRE_DATA") == "1":
        pytest.fail(f"{why} (ECREC_REQUIRE_DATA=1: tests that need the shared data fail, never skip)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "sentiment" / "marc_zh_test.csv").exists():
        _skip_or_fail_for_data(f"shared data not found at {DATA} (set ECREC_DATA); CI always has it")
    return DATA


@pytest.fixture(scope="session")
def data_file(data_dir):
    """``data_file(relative path)``: that file of the shared data, or a skip (a failure in CI) saying
    which file is missing."""
    def need(rel: str | Path) -> Path:
        path = data_dir / rel
        if not path.exists():
            _skip_or_fail_for_data(f"{path} not found")
        return path

    return need


@pytest.fixture(scope="session")
def analyzer():
    from ecrec.recommender import RecommenderConfig, load_analyzer

    return load_analyzer(RecommenderConfig())


@pytest.fixture(scope="session")
def encoder(analyzer):
    return analyzer.encoder


@pytest.fixture(scope="session")
def probe_analyzer(encoder):
    """The shipped linear probe on the same encoder (the default head is the fine-tuned branch)."""
    from ecrec.text.sentiment import TextAnalyzer, load_head, probe_path

    return TextAnalyzer(encoder, load_head(probe_path(encoder.config.model), encoder))


@pytest.fixture(scope="session")
def demo_items():
    from ecrec.retrieval.catalog import load_demo_catalog

    return load_demo_catalog()


@pytest.fixture()
def demo_rec(analyzer, demo_items):
    """A fresh Recommender on the demo catalog (item vectors cached on disk), exploration off."""
    from ecrec.text.encoder import default_home
    from ecrec.retrieval.ranking import RankingConfig
    from ecrec.recommender import Recommender, RecommenderConfig

    rec = Recommender(analyzer, RecommenderConfig(ranking=RankingConfig(explore_share=0.0)),
                      cache_dir=default_home() / "cache")
    rec.add_items(demo_items)
    return rec


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server (Debian's package) on a free local port, AOF with fsync on every write.
    Skips where it is not installed; CI (ECREC_REQUIRE_REDIS=1) fails instead."""
    import shutil
    import subprocess
    import time

    exe = shutil.which("redis-server")
    if exe is None:
        why = "redis-server is not installed (`make test` installs Debian's package as root: apt-get install redis-server)"
        if os.environ.get("ECREC_REQUIRE_REDIS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    d = tmp_path_factory.mktemp("redis")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
                             "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(port=port)
    deadline = time.time() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.time() < deadline and proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request, tmp_path):
    """A factory: each call opens the same durable store again, as a restarted shard would (on
    SQLite a file, on a real redis-server a key space of its own per test)."""
    if request.param == "sqlite":
        from ecrec.profiles.store import SQLiteStore

        return lambda: SQLiteStore(tmp_path / "s.db")
    url = request.getfixturevalue("redis_url")
    import uuid

    from ecrec.profiles.store_redis import RedisStore

    prefix = f"t-{uuid.uuid4().hex[:8]}"  # one server for the session, a key space per test
    return lambda: RedisStore(url, prefix=prefix)
