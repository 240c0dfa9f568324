import math

import numpy as np
import pytest

from ecrec.evaluation import metrics as m


def test_ndcg_wikipedia_example():
    # https://en.wikipedia.org/wiki/Discounted_cumulative_gain: D1..D6 graded 3,2,3,0,1,2;
    # two unretrieved documents D7 (3) and D8 (2) make the ideal order 3,3,3,2,2,2.
    rel = {"D1": 3, "D2": 2, "D3": 3, "D4": 0, "D5": 1, "D6": 2, "D7": 3, "D8": 2}
    ranked = ["D1", "D2", "D3", "D4", "D5", "D6"]
    assert m.dcg([3, 2, 3, 0, 1, 2]) == pytest.approx(6.861, abs=1e-3)
    assert m.dcg([3, 3, 3, 2, 2, 2]) == pytest.approx(8.740, abs=1e-3)
    assert m.ndcg_at_k(ranked, rel, 6) == pytest.approx(0.785, abs=1e-3)


def test_binary_metrics_by_hand():
    ranked = ["a", "b", "c", "d", "e"]
    assert m.recall_at_k(ranked, {"b", "e", "z"}, 3) == pytest.approx(1 / 3)
    assert m.recall_at_k(ranked, {"b", "e", "z"}, 5) == pytest.approx(2 / 3)
    assert m.hit_rate_at_k(ranked, {"e"}, 4) == 0.0
    assert m.hit_rate_at_k(ranked, {"e"}, 5) == 1.0
    assert m.mrr(ranked, {"c", "e"}) == pytest.approx(1 / 3)
    assert m.mrr(ranked, {"q"}) == 0.0
    # one relevant item at rank 2: DCG = 1/log2(3), IDCG = 1
    assert m.ndcg_at_k(ranked, {"b"}, 10) == pytest.approx(1 / math.log2(3))


def test_coverage_diversity_novelty():
    assert m.catalog_coverage([["a", "b"], ["b", "c"]], 10) == pytest.approx(0.3)
    v = np.array([[1, 0], [0, 1], [1, 0]], dtype=float)
    # pairs: (1,2) dist 1, (1,3) 0, (2,3) 1 -> mean 2/3
    assert m.intra_list_diversity(v) == pytest.approx(2 / 3)
    assert m.novelty(["a", "b"], {"a": 50, "b": 25}, 100) == pytest.approx((1 + 2) / 2)


def test_accuracy_macro_f1_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    acc, f1 = m.accuracy_macro_f1(y, p, 3)
    assert acc == pytest.approx(4 / 6)
    # class 0: tp1 fp1 fn1 -> .5; class 1: tp2 fp1 fn0 -> .8; class 2: tp1 fp0 fn1 -> 2/3
    assert f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_bad_k(k):
    with pytest.raises(ValueError):
        m.recall_at_k(["a"], {"a"}, k)
