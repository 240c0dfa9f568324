"""Shared fixtures. Unit tests never start Ray; the real model is loaded once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ECREC_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "sentiment" / "marc_zh_test.csv").exists():
        pytest.skip(f"shared data not found at {DATA} (set ECREC_DATA); CI always has it")
    return DATA


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
    from ecrec.sentiment import TextAnalyzer, load_head, probe_path

    return TextAnalyzer(encoder, load_head(probe_path(encoder.config.model), encoder))


@pytest.fixture(scope="session")
def demo_items():
    from ecrec.catalog import load_demo_catalog

    return load_demo_catalog()


@pytest.fixture()
def demo_rec(analyzer, demo_items):
    """A fresh Recommender on the demo catalog (item vectors cached on disk), exploration off."""
    from ecrec.encoder import default_home
    from ecrec.ranking import RankingConfig
    from ecrec.recommender import Recommender, RecommenderConfig

    rec = Recommender(analyzer, RecommenderConfig(ranking=RankingConfig(explore_share=0.0)),
                      cache_dir=default_home() / "cache")
    rec.add_items(demo_items)
    return rec
