"""The dev split scored in shares: every rank gets every row's logits, in the original order."""
import numpy as np
import pytest

pytest.importorskip("torch")


class _Rank:
    """Rank ``rank`` of ``world`` whose ``gather`` returns the parts the other ranks computed."""

    def __init__(self, rank: int, world: int, parts: dict):
        self.rank, self.world, self.parts, self.device = rank, world, parts, "cpu"

    def gather(self, obj):
        self.parts[self.rank] = obj
        return [self.parts.get(r) for r in range(self.world)]


@pytest.mark.parametrize("n,world", [(7, 2), (10, 3), (1, 2)])
def test_shared_logits_equal_one_whole_pass(monkeypatch, n, world):
    from training import finetune

    def fake_predict(model, tok, texts, cfg, device="cpu"):  # logits that name their text
        return np.array([[float(t.split()[1]), -float(t.split()[1])] for t in texts], dtype=np.float32)

    monkeypatch.setattr(finetune, "predict_logits", fake_predict)
    texts = [f"text {i}" for i in range(n)]
    whole = fake_predict(None, None, texts, None)
    parts: dict = {}
    seen: list[list[str]] = []
    for rank in reversed(range(world)):  # rank 0 last: it sees every other rank's share
        session = _Rank(rank, world, parts)
        monkeypatch.setattr(finetune, "predict_logits",
                            lambda m, t, xs, c, d="cpu": seen.append(xs) or fake_predict(m, t, xs, c))
        got = finetune.shared_logits(None, None, texts, None, session)
    np.testing.assert_array_equal(got, whole)
    assert sorted(x for part in seen for x in part) == sorted(texts)  # each row scored once, by one rank
    assert max(len(part) for part in seen) == -(-n // world)
