"""Length-bucketed batches and the frozen-trunk cache used by fine-tuning."""
import numpy as np
import torch
from transformers import BertConfig, BertModel

from ecrec.learning.batching import LengthBuckets, TrunkCache
from ecrec.text.classifier import BranchClassifier
from ecrec.learning.finetune_data import balanced_weights, calibrate_bias


def test_ranks_get_disjoint_equal_shares_and_batches_group_lengths():
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 200, size=1001).tolist()
    shards = [LengthBuckets(lengths, 16, rank=r, world=2, seed=3) for r in range(2)]
    a, b = (set(s.indices.tolist()) for s in shards)
    assert not a & b and len(a) == len(b) == 500
    assert len(shards[0]) == len(shards[1]) == 32  # ceil(500 / 16): DDP steps stay in lock-step
    batches = shards[0].batches()
    assert sorted(i for bt in batches for i in bt) == sorted(a)  # every example once per epoch
    spread = np.mean([np.ptp(np.asarray(lengths)[bt]) for bt in batches])
    assert spread < 0.1 * np.ptp(lengths)  # similar lengths inside a batch
    shards[0].set_epoch(1)
    assert [bt.tolist() for bt in shards[0].batches()] != [bt.tolist() for bt in batches]  # reshuffled


def _tiny_base():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    return BertModel(cfg, add_pooling_layer=False).eval()


def test_cached_trunk_gives_the_same_logits_and_gradients():
    model = BranchClassifier(_tiny_base(), 3, branch_layers=2, dropout=0.0)
    cache = TrunkCache(model.base, model.split)
    ids = torch.randint(1, 50, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[3, 2:] = 0
    ids[mask == 0] = 0
    direct = model(ids, mask)
    cache.batch([10, 11, 12, 13], ids, mask)  # first sight: computed
    cached = model(ids, mask, trunk=cache.batch([10, 11, 12, 13], ids, mask))
    assert cache.misses == 4 and cache.hits == 4
    torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-5)
    # a re-batched subset (shorter padding) reads the cache and agrees with a direct pass
    sub = torch.tensor([1, 3])
    n = int(mask[sub].sum(1).max())
    again = model(ids[sub, :n], mask[sub, :n], trunk=cache.batch([11, 13], ids[sub, :n], mask[sub, :n]))
    torch.testing.assert_close(again, direct[sub], rtol=1e-5, atol=1e-5)


def test_balanced_weights_and_bias_calibration():
    y = np.array([0] * 40 + [1] * 20 + [2] * 40)
    w = balanced_weights(y, 3)
    assert w[1] == np.float32(2 * w[0]) and abs(w[y].mean() - 1) < 1e-6
    # logits that under-call class 1: a positive offset on it recovers the right answers
    logits = np.zeros((100, 3), dtype=np.float32)
    logits[np.arange(100), y] = 1.0
    logits[40:60, 0] = 1.3  # class-1 rows look like class 0
    offsets, best = calibrate_bias(logits, y, 3)
    assert (logits + offsets).argmax(1).tolist() == y.tolist()
    assert best == 2.0  # accuracy 1 + macro-F1 1


def _partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        yield [[first], *part]
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1:]]


def test_encoder_batch_plan_is_the_cheapest_of_all_partitions():
    from ecrec.text.batching import padded_tokens, plan_batches

    rng = np.random.default_rng(4)
    for _ in range(40):
        n = int(rng.integers(1, 8))
        lengths = rng.integers(3, 130, size=n).tolist()
        max_rows, overhead = int(rng.integers(1, 5)), int(rng.integers(0, 60))
        plan = plan_batches(lengths, max_rows, overhead)
        assert sorted(i for b in plan for i in b.tolist()) == list(range(n))
        assert all(1 <= len(b) <= max_rows for b in plan)
        cost = padded_tokens(lengths, plan) + overhead * len(plan)
        best = min(padded_tokens(lengths, [np.array(g) for g in p]) + overhead * len(p)
                   for p in _partitions(list(range(n))) if all(len(g) <= max_rows for g in p))
        assert cost == best


def test_mixed_length_rows_pad_far_less_than_fixed_batches():
    from ecrec.text.batching import padded_tokens, plan_batches

    # a Chinese review, its short clauses, English texts: fixed batches of 32 pad every row to 128
    lengths = [128] + [12] * 40 + [30] * 40
    plan = plan_batches(lengths, 32, overhead_tokens=48)
    assert padded_tokens(lengths, plan) == 128 + 40 * 12 + 40 * 30
    assert len(plan) == 5  # 1 long row, then 80 rows in 32-row passes of similar length


def test_a_small_call_is_split_so_every_pass_thread_has_work():
    from ecrec.text.batching import plan_batches

    lengths = [20, 14, 12, 11]  # a short review and its clauses: one pass is cheapest for one thread
    assert len(plan_batches(lengths, 32)) == 1
    two = plan_batches(lengths, 32, min_batches=2)
    assert sorted(i for b in two for i in b.tolist()) == [0, 1, 2, 3] and len(two) == 2
    assert len(plan_batches([40], 32, min_batches=2)) == 1  # one row cannot be split
