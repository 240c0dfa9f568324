"""The sequence retriever trained with the project's Ray Train trainer beats popularity on a
slice of the Amazon Scientific valid split."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.data]

USERS = 400


def test_short_ray_train_run_beats_popularity(server, data_dir, tmp_path):
    from ecrec.text.encoder import EncoderConfig, TextEncoder, default_home
    from ecrec.evaluation.data import load_unisrec
    from ecrec.evaluation.harness import item_vectors
    from ecrec.evaluation.methods import Popularity, Sequence
    from ecrec.evaluation.metrics import ranking_report
    from ecrec.retrieval.sequence import SequenceConfig
    from ecrec.learning.sequence_training import SequenceTrainConfig
    from training.sequence import fit

    full = load_unisrec(data_dir / "recsys" / "amazon_scientific")
    ds = full.user_slice(USERS)
    # the whole catalog's vectors from the model home's cache, where the unit tier's search eval put
    # them (same encoder, same texts: in `make test` no pass here), cut to the slice's items
    every = item_vectors(full, TextEncoder(EncoderConfig()), default_home() / "cache")
    row = {it.id: n for n, it in enumerate(full.items)}
    X = every[[row[it.id] for it in ds.items]]
    cfg = SequenceTrainConfig(model=SequenceConfig(id_items=ds.n_items), epochs=8, patience=8, batch_size=64,
                              workers=2, threads=1, cpus_per_worker=0.25)
    model, report = fit(X, ds, cfg, data_dir / "recsys" / "amazon_scientific", storage=tmp_path / "ray",
                        name="seq-smoke", users=USERS)
    valid = ds.valid
    seq = ranking_report(Sequence(X, model).rank(valid, 50), valid.targets)
    pop = ranking_report(Popularity(ds, valid).rank(valid, 50), valid.targets)
    assert report["valid_ndcg10"] == pytest.approx(seq["N@10"], abs=1e-6)  # the kept epoch is the best
    assert seq["N@10"] >= 2.0 * pop["N@10"] and seq["R@10"] >= 1.5 * pop["R@10"], (seq, pop)
