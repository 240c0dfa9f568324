"""The shipped sentiment and intent branches on fixed slices of data they never trained on.

Floors sit a few points under what the shipped models measured on these exact slices (the
full-set figures are in BENCHMARKS.md): a broken or swapped model fails them.
"""
import numpy as np
import pytest

from ecrec.evaluation.metrics import accuracy_macro_f1

MEASURED = {  # on these slices, shipped branches (`ecrec eval-text` gives the full-set figures)
    "marc_zh": 0.667, "marc_zh_f1": 0.588, "marc_en": 0.770, "marc_en_f1": 0.696,
    "heldout_label": 0.873, "heldout_polarity": 0.905,
    "bitext_groups": 0.995, "zh_test": 0.920, "none_marc": 0.997, "service_not_none": 0.975, "zh_accepted": 0.953,
}


def _slice(texts, y, n, seed=0):
    idx = np.random.default_rng(seed).permutation(len(texts))[:n]
    return [texts[i] for i in idx], np.asarray(y)[idx]


@pytest.fixture(scope="module")
def sentiment_data(data_dir):
    from ecrec.learning.finetune_data import FinetuneConfig, load_task

    return load_task(FinetuneConfig(task="sentiment", data_dir=str(data_dir), eval_test=True))


@pytest.fixture(scope="module")
def intent_data(data_dir):
    from ecrec.learning.finetune_data import FinetuneConfig, load_task

    return load_task(FinetuneConfig(task="intent", data_dir=str(data_dir), eval_test=True))


def _sentiment_logits(analyzer, texts):
    from ecrec.evaluation.text_eval import head_logits

    return head_logits(analyzer.encoder, analyzer.head, texts)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_sentiment_branch_on_a_marc_test_slice(analyzer, sentiment_data, lang):
    """400 test reviews per language. (Against the probe the branch wins on the full test sets,
    BENCHMARKS.md; on 400 reviews macro-F1 moves by +-2 points, too much to compare the two here.)"""
    split = sentiment_data.tests[f"marc_{lang}_test"]
    texts, y = _slice(split.texts, split.labels, 400)
    acc, f1 = accuracy_macro_f1(y, _sentiment_logits(analyzer, texts).argmax(1), 3)
    assert acc >= MEASURED[f"marc_{lang}"] - 0.03, acc
    assert f1 >= MEASURED[f"marc_{lang}_f1"] - 0.03, f1


def test_sentiment_branch_on_held_out_categories(analyzer, sentiment_data):
    """酒店, 水果 and 蒙牛 reviews: categories the branch never trained on. Binary data: the served
    label must not call a clear review neutral, and the polarity must be right."""
    from ecrec.learning.finetune_data import evaluate_binary

    texts, ys = [], []
    for name, split in sentiment_data.tests.items():
        if name.startswith("shopping_heldout_"):
            t, y = _slice(split.texts, split.labels, 200)
            texts += t
            ys.append(y)
    m = evaluate_binary(_sentiment_logits(analyzer, texts), np.concatenate(ys))
    assert m["label_accuracy"] >= MEASURED["heldout_label"] - 0.03, m
    assert m["polarity_accuracy"] >= MEASURED["heldout_polarity"] - 0.03, m


CLEAR = [("物流很快，包装完好，味道也很好，下次还来买", "positive"), ("房间干净，服务热情，早餐丰富，强烈推荐", "positive"),
         ("Fits perfectly and the fabric feels great. Very happy.", "positive"),
         ("质量太差了，用了两天就坏了，退货！", "negative"), ("水果一半都烂了，再也不会买了", "negative"),
         ("Stopped working after a week. Waste of money.", "negative")]
MIXED = ["还行吧，一般般", "一般般吧，凑合用，没有想象中好也没有很差", "It's okay I guess. Nothing special, nothing terrible."]


@pytest.mark.parametrize("text,label", CLEAR)
def test_clear_reviews_are_not_called_neutral(analyzer, text, label):
    assert analyzer.sentiment([text])[0].label == label, analyzer.sentiment([text])[0]


def test_mixed_reviews_lean_neutral(analyzer):
    """Mixed reviews get several times the neutral probability of clear ones. (The label itself is
    neutral for the second only: issue 9 keeps this open, see the xfail below.)"""
    clear = np.mean([s.probs["neutral"] for s in analyzer.sentiment([t for t, _ in CLEAR])])
    mixed = np.mean([s.probs["neutral"] for s in analyzer.sentiment(MIXED)])
    assert mixed >= 3 * clear, (mixed, clear)
    assert analyzer.sentiment([MIXED[1]])[0].label == "neutral"


@pytest.mark.xfail(strict=True, reason="known shortfall (issue 9): the K=6 branch calls 还行吧，一般般 negative "
                                       "(p 0.48 vs neutral 0.40) and the English one positive")
def test_every_mixed_review_is_called_neutral(analyzer):
    assert [s.label for s in analyzer.sentiment(MIXED)] == ["neutral"] * 3


def test_seed_review_pushes_battery_down(analyzer):
    a = analyzer.analyze(["这款手机拍照效果很好，但电池续航不太理想"])[0]
    assert [c.text for c in a.clauses] == ["这款手机拍照效果很好", "但电池续航不太理想"]
    assert a.clauses[0].sentiment.polarity > 0.5 and a.clauses[1].sentiment.polarity < 0


def _intent_pred(analyzer, texts, labels):
    return np.array([labels.index(i.label) for i in analyzer.intents(texts)])


def test_intent_branch_on_held_out_paraphrase_groups_and_the_chinese_test_set(analyzer, intent_data):
    assert list(analyzer.intent_head.labels) == intent_data.labels
    for name, key, n in (("bitext_heldout_groups", "bitext_groups", 600), ("zh_test", "zh_test", None)):
        split = intent_data.tests[name]  # never trained on: whole paraphrase groups; a separately written set
        texts, y = _slice(split.texts, split.labels, n or len(split.texts))
        acc, _ = accuracy_macro_f1(y, _intent_pred(analyzer, texts, intent_data.labels), len(intent_data.labels))
        assert acc >= MEASURED[key] - 0.03, (name, acc)


def test_reviews_are_out_of_scope_and_service_requests_are_not(analyzer, intent_data):
    none = intent_data.labels.index("none")
    reviews = []
    for lang in ("zh", "en"):
        reviews += _slice(intent_data.tests[f"none_marc_{lang}"].texts, [none] * 500, 150)[0]
    share_none = (_intent_pred(analyzer, reviews, intent_data.labels) == none).mean()
    assert share_none >= MEASURED["none_marc"] - 0.03, share_none
    service = _slice(intent_data.tests["bitext_heldout_groups"].texts, [0] * 10**5, 150)[0]
    service += intent_data.tests["zh_test"].texts[::3]
    not_none = (_intent_pred(analyzer, service, intent_data.labels) != none).mean()
    assert not_none >= MEASURED["service_not_none"] - 0.03, not_none


LINE_CASES = [  # written for this test: none of them is in the training or dev data (checked below)
    ("这款手机拍照效果很好，但电池续航不太理想", "none"), ("这款相机的防抖效果真不错，就是有点重", "none"),
    ("请问这件羽绒服冬天穿够暖吗", "none"), ("推荐一款送女朋友的香水", "none"),
    ("is the blue one waterproof enough for snorkeling?", "none"),
    ("在哪里可以给买过的东西打分", "review"), ("下单一周还没发货，客服也不回，我要投诉你们", "complaint"),
    ("Please cancel the order I placed this morning", "cancel_order"),
    ("密码想不起来了，登不上去", "recover_password"), ("别让机器人回复了，我要找真人", "contact_human_agent"),
    ("我申请的退款现在处理到哪了", "track_refund"),
]


def test_line_cases_are_not_training_data(intent_data):
    seen = set(intent_data.train.texts) | set(intent_data.dev.texts)
    assert not [t for t, _ in LINE_CASES if t in seen]


@pytest.mark.parametrize("text,intent", LINE_CASES)
def test_intent_branch_on_where_the_line_runs(analyzer, text, intent):
    got = analyzer.intents([text])[0]
    assert got.label == intent and got.top[0] == (got.label, got.confidence), got


def test_low_confidence_is_flagged_for_a_clarifying_question(analyzer, intent_data):
    """The threshold (fitted on dev, stored in the branch) separates likely-right answers from
    likely-wrong ones on the Chinese test set: those under it are the ones to ask about."""
    split = intent_data.tests["zh_test"]
    got = analyzer.intents(split.texts)
    threshold = analyzer.intent_head.info["clarify_below"]
    flagged = np.array([g.clarify for g in got])
    assert (flagged == np.array([g.confidence < threshold for g in got])).all()
    right = np.array([intent_data.labels.index(g.label) for g in got]) == split.labels
    assert 0 < flagged.mean() < 0.5, flagged.mean()
    assert right[~flagged].mean() >= MEASURED["zh_accepted"] - 0.03, right[~flagged].mean()
    assert right[~flagged].mean() > right[flagged].mean() + 0.2
