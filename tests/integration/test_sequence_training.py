"""The sequence retriever trained with the project's Ray Train trainer beats popularity on a
slice of the Amazon Scientific valid split."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.data]

USERS = 400


def test_short_ray_train_run_beats_popularity(server, data_dir, tmp_path):
    from ecrec.text.encoder import EncoderConfig, TextEncoder
    from ecrec.evaluation.data import load_unisrec
    from ecrec.evaluation.harness import item_vectors
    from ecrec.evaluation.methods import Popularity, Sequence
    from ecrec.evaluation.metrics import ranking_report
    from ecrec.retrieval.sequence import SequenceConfig
    from ecrec.training.sequence_training import SequenceTrainConfig
    from training.sequence import fit

    ds = load_unisrec(data_dir / "recsys" / "amazon_scientific").user_slice(USERS)
    # titles carry most of an item's text: 32 tokens keep the test's embedding pass short
    X = item_vectors(ds, TextEncoder(EncoderConfig(max_length=32)), tmp_path / "cache")
    cfg = SequenceTrainConfig(model=SequenceConfig(id_items=ds.n_items), epochs=8, patience=8, batch_size=64,
                              workers=2, threads=1, cpus_per_worker=0.25)
    model, report = fit(X, ds, cfg, data_dir / "recsys" / "amazon_scientific", storage=tmp_path / "ray",
                        name="seq-smoke", users=USERS)
    valid = ds.valid
    seq = ranking_report(Sequence(X, model).rank(valid, 50), valid.targets)
    pop = ranking_report(Popularity(ds, valid).rank(valid, 50), valid.targets)
    assert report["valid_ndcg10"] == pytest.approx(seq["N@10"], abs=1e-6)  # the kept epoch is the best
    assert seq["N@10"] >= 2.0 * pop["N@10"] and seq["R@10"] >= 1.5 * pop["R@10"], (seq, pop)
