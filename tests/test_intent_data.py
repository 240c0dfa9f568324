"""The intent and sentiment evaluation data: splits that cannot flatter, augmentation, calibration."""
import json
from collections import Counter

import numpy as np
import pytest

from ecrec.learning.augment import variants
from ecrec.learning.finetune_data import calibrate_bias, evaluate_binary
from ecrec.learning.intent_data import NONE_TEXTS, ZH_TEST, ZH_TRAIN, clarify_threshold, hold_out_groups, read_jsonl

INTENTS = {"cancel_order", "change_order", "change_shipping_address", "check_cancellation_fee", "check_invoices",
           "check_payment_methods", "check_refund_policy", "complaint", "contact_customer_service",
           "contact_human_agent", "create_account", "delete_account", "delivery_options", "delivery_period",
           "edit_account", "get_invoice", "get_refund", "newsletter_subscription", "payment_issue", "place_order",
           "recover_password", "registration_problems", "review", "set_up_shipping_address", "switch_account",
           "track_order", "track_refund"}


def _bigrams(s: str) -> set[str]:
    return {s[i:i + 2] for i in range(len(s) - 1)} or {s}


def test_project_chinese_intent_sets_cover_every_intent_and_do_not_overlap():
    train, test = read_jsonl(ZH_TRAIN), read_jsonl(ZH_TEST)
    assert {r["intent"] for r in train} == INTENTS == {r["intent"] for r in test}
    assert min(Counter(r["intent"] for r in train).values()) >= 30
    assert min(Counter(r["intent"] for r in test).values()) >= 10 and len(test) >= 270
    # the test set was written separately; no training utterance is a near-copy of a test one
    test_grams = [_bigrams(r["text"]) for r in test]
    close = [r["text"] for r in train
             if any(len(_bigrams(r["text"]) & g) / len(_bigrams(r["text"]) | g) >= 0.7 for g in test_grams)]
    assert close == []


def test_out_of_scope_texts_are_not_service_requests():
    rows = read_jsonl(NONE_TEXTS)
    assert len(rows) >= 500 and {r["lang"] for r in rows} == {"zh", "en"}
    assert {r["kind"] for r in rows} == {"opinion", "product_question", "query", "recommendation", "smalltalk"}
    assert not any(w in r["text"] for r in rows for w in ("退款", "订单", "发票", "refund", "invoice"))


def test_variants_are_deterministic_distinct_and_keep_order_numbers():
    a = variants("订单123456还没发货，我想取消", 3, seed=0)
    assert a == variants("订单123456还没发货，我想取消", 3, seed=0)
    assert len(a) == len(set(a)) == 3 and "订单123456还没发货，我想取消" not in a
    assert all("123456" in v for v in a)
    en = variants("I want to cancel an order, what do I have to do?", 2, seed=1)
    assert len(en) == 2 and all(v != "I want to cancel an order, what do I have to do?" for v in en)


def test_hold_out_groups_takes_whole_groups_from_every_intent():
    y = np.repeat([0, 1], 100)
    groups = np.concatenate([np.arange(100) // 10, 10 + np.arange(100) // 25])  # intent 1: 4 big groups
    held = hold_out_groups(groups, y, 0.2, seed=0)
    for g in np.unique(groups):  # a group is held out entirely or not at all
        inside = np.isin(np.flatnonzero(groups == g), held)
        assert inside.all() or not inside.any()
    assert (y[held] == 0).sum() == 20 and (y[held] == 1).sum() == 25  # one 25-row group: no smaller choice


def test_clarify_threshold_known_answer():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 1, 1, 0, 1, 0], dtype=bool)
    assert clarify_threshold(conf, correct, 0.97) == 0.8  # the top four are all right; the fifth is not
    assert clarify_threshold(np.array([0.9]), np.array([False]), 0.97) == 1.0


def test_clarify_threshold_never_cuts_inside_a_tie():
    conf = np.array([1.0, 1.0, 1.0, 1.0, 0.5])
    correct = np.array([1, 1, 1, 0, 1], dtype=bool)  # three right then one wrong, all at 1.0
    assert clarify_threshold(conf, correct, 0.97) == 1.0  # nothing can be accepted at 0.97
    assert clarify_threshold(conf, correct, 0.75) == 0.5


def test_clarify_threshold_takes_the_largest_accepted_set():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 1, 1, 0, 1, 0], dtype=bool)
    assert clarify_threshold(conf, correct, 0.8) == 0.6


def test_evaluate_binary_counts_neutral_as_wrong_but_not_for_polarity():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 2.0], [1.0, 2.0, 0.0]])
    y = np.array([0, 2, 2, 2])  # row 1 is neutral leaning positive, row 3 neutral leaning negative
    m = evaluate_binary(logits, y)
    assert m["label_accuracy"] == 0.5 and m["polarity_accuracy"] == 0.75 and m["neutral_share"] == 0.5


def test_binary_dev_rows_pull_neutral_down():
    """MARC-style dev where neutral is right, plus clear binary reviews the model calls neutral:
    with the binary rows, calibration lowers neutral so the clear reviews get their polarity."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 50)
    logits = np.eye(3)[y] * 2.0 + rng.normal(0, 0.1, (150, 3))
    by = np.repeat([0, 2], 50)
    blog = np.eye(3)[by] * 1.0
    blog[:, 1] = 1.3  # neutral wins slightly on clear reviews
    plain, _ = calibrate_bias(logits, y, 3)
    joint, _ = calibrate_bias(logits, y, 3, binary_logits=blog, binary_y=by)
    assert ((blog + plain).argmax(1) == by).mean() == 0.0
    assert ((blog + joint).argmax(1) == by).mean() == 1.0
    assert ((logits + joint).argmax(1) == y).mean() == 1.0  # the 3-class dev stays right


def test_shopping_splits_hold_out_whole_categories(data_dir):
    from ecrec.learning.datasets import load_online_shopping_categories
    from ecrec.learning.finetune_data import FinetuneConfig, shopping_splits

    cfg = FinetuneConfig(data_dir=str(data_dir), extra_zh_binary=5000)
    train, dev, tests = shopping_splits(cfg)
    texts, _, cats = load_online_shopping_categories(data_dir)
    cats_of = {}
    for t, c in zip(texts, cats):
        cats_of.setdefault(t, set()).add(c)
    held = set(cfg.zh_heldout_categories)
    assert len(train.texts) == 5000 and len(dev.texts) == 1000
    assert not any(cats_of[t] <= held for t in train.texts + dev.texts)
    assert set(tests) == {f"shopping_heldout_{c}" for c in cfg.zh_heldout_categories}
    for name, split in tests.items():  # only its category, and no text that is also in a trained one
        assert all(cats_of[t] == {name.rsplit("_", 1)[1]} for t in split.texts) and split.binary.all()
        assert set(split.labels.tolist()) == {0, 2}


def test_intent_splits_keep_paraphrase_groups_apart(data_dir):
    from ecrec.learning.intent_data import GROUPS, intent_splits, load_groups

    d = intent_splits(data_dir)
    groups = load_groups(data_dir / "intents" / "bitext_20k_utterances.csv", GROUPS)
    from ecrec.learning.datasets import load_intents

    texts, _ = load_intents(data_dir)
    group_of = {}
    for t, g in zip(texts, groups):
        group_of.setdefault(t, set()).add(int(g))
    train_groups = set().union(*(group_of[t] for t, lang in zip(d["train"][0], d["train"][2])
                                 if lang == "en" and t in group_of))
    held = d["tests"]["bitext_heldout_groups"][0]
    assert len(held) > 3000
    assert not any(group_of[t] & train_groups for t in held)  # no held-out utterance's group trained
    assert d["labels"][-1] == "none" and len(d["labels"]) == 28
    from ecrec.learning.intent_data import NearTexts, normalise

    train = {normalise(t) for t in d["train"][0]}
    for name in ("bitext_heldout_groups", "zh_test"):  # (random rows are the flattering protocol figure)
        assert not [t for t in d["tests"][name][0] if normalise(t) in train], name
    assert not [t for t in d["dev"][0] if normalise(t) in train and t in held]
    near = NearTexts(d["tests"]["zh_test"][0])  # no Chinese training text, variants included, near a test one
    assert not [t for t, lang in zip(d["train"][0], d["train"][2]) if lang == "zh" and near(t)]
    en_train = Counter(d["labels"][y] for y, lang in zip(d["train"][1], d["train"][2]) if lang == "en")
    en_train.pop("none")
    assert len(en_train) == 27 and min(en_train.values()) >= 20  # every intent still trains in English


@pytest.mark.parametrize("path", [ZH_TRAIN, ZH_TEST, NONE_TEXTS])
def test_data_files_are_clean_jsonl(path):
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert row["text"] == row["text"].strip() and row["text"]
