"""The Serve graph gives the same top-k as the harness's ``live`` method (Amazon Scientific slice).

``live`` is what ``ecrec eval`` reports for the served ranking; this test is what makes that
number the graph's: the same purchases, sent over HTTP, give the same lists, with the shipped
sequence retriever and the co-visit counts the board spreads to the retrievers.
"""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.data]

N_USERS, EXTRA_ITEMS = 5, 250


@pytest.fixture(scope="module")
def scientific_slice(data_dir):
    from ecrec.evaluation.data import SeqDataset, Split, load_unisrec

    ds = load_unisrec(data_dir / "recsys" / "amazon_scientific")
    rows = [r for r in range(len(ds.test)) if len(ds.test.histories[r]) >= 4][:N_USERS]
    keep = sorted({i for r in rows for i in ds.test.histories[r]} | {int(ds.test.targets[r]) for r in rows}
                  | set(range(EXTRA_ITEMS)))
    new = {old: n for n, old in enumerate(keep)}
    split = Split([ds.test.users[r] for r in rows], [[new[i] for i in ds.test.histories[r]] for r in rows],
                  np.asarray([new[int(ds.test.targets[r])] for r in rows]))
    return SeqDataset("ScientificSlice", [ds.items[i] for i in keep], split, split, split)


def test_graph_returns_the_live_top_k(server, scientific_slice, analyzer, tmp_path):
    from ray import serve

    from deployments.app import build_app
    from deployments.config import AppArgs
    from ecrec.evaluation.methods import Live
    from ecrec.retrieval.ranking import RankingConfig
    from ecrec.recommender import Recommender, RecommenderConfig
    from ecrec.retrieval.sequence import shipped_sequence_path

    client, _ = server
    ds = scientific_slice
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(it.model_dump_json() + "\n" for it in ds.items))
    args = AppArgs(catalog=str(catalog), index_dir=str(tmp_path / "index"), state_dir=str(tmp_path / "state"),
                   namespace=f"ecrec-sci-{uuid.uuid4().hex[:8]}", explore_share=0.0, encoder_max_replicas=1,
                   num_shards=2, sqlite_synchronous="NORMAL", record_impressions=False)
    serve.run(build_app(args), name="ecrec-sci", route_prefix="/sci")
    try:
        rec = Recommender.from_catalog(ds.items, RecommenderConfig(ranking=RankingConfig(explore_share=0.0)))
        assert rec.ranker.sequence is not None and shipped_sequence_path().exists()
        live = Live(rec, ds)
        t0 = time.time() - 3600 * 60
        for user, history in zip(ds.test.users, ds.test.histories):
            live.replay(user, history, t0)
            for j, i in enumerate(history):
                r = client.post("/sci/v1/events", json={"user_id": f"eval-{user}", "type": "purchase",
                                                        "item_id": ds.items[i].id, "ts": t0 + j * live.spacing})
                assert r.status_code == 200, r.text
        time.sleep(1.0)  # counters and co-visit pairs reach the retriever (flush 0.1 s, sync 0.2 s)
        checked = 0
        for user in ds.test.users:
            got = client.get(f"/sci/v1/users/eval-{user}/recommendations", params={"k": 10}).json()["items"]
            want = live.recommend(user, 10, time.time())
            assert [g["item_id"] for g in got] == [ds.items[i].id for i in want], user
            assert {g["source"] for g in got} & {"sequence", "bought_together"}, got
            checked += 1
        assert checked == N_USERS
    finally:
        serve.delete("ecrec-sci")
