"""`ecrec index build` with Ray Data: an actor pool of encoders gives the in-process vectors."""
import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_ray_data_embedding_equals_in_process(server, demo_items, encoder, tmp_path):
    from deployments.index_build import embed_with_ray_data
    from ecrec.retrieval.artifact import read_artifact, write_artifact

    items = demo_items[:40]
    texts = [it.embedding_text() for it in items]
    x = embed_with_ray_data(texts, "e5-small", actors=1, batch_size=16, num_cpus=0.25)
    ref = encoder.encode(texts, "passage")  # aligned, as the in-process artifact build does
    assert x.shape == ref.shape
    assert ((x * ref).sum(1) > 0.9999).all()
    write_artifact(items, x, tmp_path / "art", "e5-small", "HNSW32")
    back_items, index, manifest = read_artifact(tmp_path / "art")
    assert [it.id for it in back_items] == [it.id for it in items] and manifest["factory"] == "HNSW32"
    assert index.search(x[3], 1)[0][0] == items[3].id
