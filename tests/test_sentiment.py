import numpy as np
import pytest

from ecrec.learning.datasets import load_marc
from ecrec.evaluation.metrics import accuracy_macro_f1
from ecrec.text.sentiment import LinearProbe, train_probe


@pytest.mark.parametrize("text,label", [
    ("这款手机拍照效果很好", "positive"), ("电池续航很差", "negative"),
    ("质量太差了，用了两天就坏了，退货！", "negative"), ("Absolutely love it, works perfectly", "positive"),
    ("Terrible. Broke after one week and support never answered.", "negative"),
])
@pytest.mark.parametrize("head", ["branch", "probe"])
def test_shipped_heads_on_clear_cases(analyzer, probe_analyzer, head, text, label):
    an = analyzer if head == "branch" else probe_analyzer
    assert an.sentiment([text])[0].label == label


def test_default_head_is_the_shipped_fine_tuned_branch(analyzer, probe_analyzer):
    from ecrec.text.sentiment import BranchHead

    assert isinstance(analyzer.head, BranchHead) and analyzer.head.info["name"].startswith("sentiment-ft")
    assert probe_analyzer.head.info["name"].startswith("sentiment_probe")


def test_each_analysis_names_the_model_that_made_it(analyzer, probe_analyzer):
    """The version metrics and /readyz report: encoder + sentiment head (+ intent branch)."""
    a, p = analyzer.analyze(["还不错"])[0], probe_analyzer.analyze(["还不错"])[0]
    assert a.model == analyzer.version == "+".join(["e5-small", analyzer.head.info["name"],
                                                    analyzer.intent_head.info["name"]])
    assert p.model == probe_analyzer.version and p.model.split("+")[1].startswith("sentiment_probe")


@pytest.mark.parametrize("head", ["branch", "probe"])
def test_seed_review_clauses(analyzer, probe_analyzer, head):
    a = (analyzer if head == "branch" else probe_analyzer).analyze(["这款手机拍照效果很好，但电池续航不太理想"])[0]
    assert [c.text for c in a.clauses] == ["这款手机拍照效果很好", "但电池续航不太理想"]
    # Both heads call the mild complaint "不太理想" neutral leaning negative (as 3-star MARC reviews
    # read); what the profile uses is the sign and size of the polarity. (The branch trained on MARC
    # alone leaned positive here, +0.24; the online_shopping reviews in cpu.yaml fixed that.)
    assert a.clauses[0].sentiment.polarity > 0.5 and a.clauses[1].sentiment.polarity < 0
    assert a.language == "zh" and not a.truncated


def test_huge_text_is_truncated_and_flagged(analyzer):
    a = analyzer.analyze(["很好用" * 400_000])[0]
    assert a.truncated and len(a.text) <= 2000 and a.sentiment.label == "positive"


def test_shipped_heads_on_a_marc_test_slice(analyzer, probe_analyzer, data_dir):
    """The full-test figures are in BENCHMARKS.md; here a fixed 300-review slice per language.
    Floors a few points under the accuracy measured on this slice (3 classes, ~0.4 for the
    majority class): branch zh 0.703, en 0.810; probe zh 0.643, en 0.750."""
    floors = {("branch", "zh"): 0.68, ("branch", "en"): 0.78, ("probe", "zh"): 0.62, ("probe", "en"): 0.72}
    scores = {}
    for name, an in (("branch", analyzer), ("probe", probe_analyzer)):
        pred, gold = [], []
        for lang in ("zh", "en"):
            texts, y = load_marc(data_dir, lang, "test")
            idx = np.random.default_rng(0).choice(len(texts), 300, replace=False)
            pred += [an.head.labels.index(s.label) for s in an.sentiment([texts[i] for i in idx])]
            gold += y[idx].tolist()
            acc, _ = accuracy_macro_f1(y[idx], np.array(pred[-300:]), 3)
            assert acc >= floors[name, lang], (name, lang, acc)
        scores[name] = accuracy_macro_f1(np.array(gold), np.array(pred), 3)
    # the fine-tuned branch is the default because it beats the probe on both figures
    assert scores["branch"][0] > scores["probe"][0] and scores["branch"][1] > scores["probe"][1], scores


def test_probe_trained_on_a_slice_beats_chance(encoder, data_dir, tmp_path):
    texts, y = load_marc(data_dir, "en", "train")
    rng = np.random.default_rng(1)
    idx = rng.choice(len(texts), 400, replace=False)
    x = encoder.encode([texts[i] for i in idx], align=False)
    probe = train_probe(x[:300], y[idx[:300]], weight_decay=1e-3)
    acc, _ = accuracy_macro_f1(y[idx[300:]], probe.predict_proba(x[300:]).argmax(1), 3)
    assert acc > 0.5  # chance is ~0.4 (the majority class)
    probe.save(tmp_path / "p.npz")
    back = LinearProbe.load(tmp_path / "p.npz")
    np.testing.assert_allclose(back.predict_proba(x[:5]), probe.predict_proba(x[:5]), rtol=1e-6)


def test_one_pass_serves_retrieval_sentiment_and_intent(analyzer):
    """Both branches split off the shared trunk in one forward pass and give the same numbers as
    separate passes; the retrieval vector is the plain encoder's."""
    enc = analyzer.encoder
    texts = ["我想取消刚下的订单", "Where is my refund? It has been two weeks.", "屏幕很清楚，但是发货太慢了"]
    branches = [analyzer.head.branch, analyzer.intent_head.branch]
    assert len(branches[0].layers) != len(branches[1].layers)  # they split at different layers
    x, (sent, intent) = enc.encode_with_branches(texts, "query", branches)
    _, (sent1,) = enc.encode_with_branches(texts, "query", branches[:1])
    _, (intent1,) = enc.encode_with_branches(texts, "query", branches[1:])
    np.testing.assert_allclose(sent, sent1, atol=1e-4)
    np.testing.assert_allclose(intent, intent1, atol=1e-4)
    np.testing.assert_allclose(x, enc.encode(texts, "query", align=False), atol=1e-5)
    # the intent branch on the first two rows only (whole texts, not their clauses): same numbers there
    x2, (sent2, intent2) = enc.encode_with_branches(texts, "query", branches, rows=[None, 2])
    np.testing.assert_allclose(intent2[:2], intent[:2], atol=1e-4)
    assert np.isnan(intent2[2]).all() and np.allclose(sent2, sent, atol=1e-4) and np.allclose(x2, x, atol=1e-5)
    # a batch without padding (no attention mask at all) split between the rows: the same numbers too
    same = ["good", "bad", "nice"]
    assert len({len(enc.tokenizer("query: " + t)["input_ids"]) for t in same}) == 1
    _, (_, intent3) = enc.encode_with_branches(same, "query", branches, rows=[None, 1])
    _, (_, intent_all) = enc.encode_with_branches(same, "query", branches)
    np.testing.assert_allclose(intent3[0], intent_all[0], atol=1e-4)
    assert np.isnan(intent3[1:]).all()


@pytest.mark.parametrize("text,intent", [
    ("I want to cancel my order", "cancel_order"), ("I forgot my password", "recover_password"),
    ("How do I talk to a real person?", "contact_human_agent"), ("我忘记密码了", "recover_password"),
    ("我要投诉", "complaint"), ("我想删除我的账户", "delete_account"),
])
def test_shipped_intent_branch_on_clear_cases(analyzer, text, intent):
    got = analyzer.intents([text])[0]
    assert got.label == intent and got.top[0] == (got.label, got.confidence), got
    assert analyzer.analyze([text])[0].intent.label == intent


def test_int8_encoder_stays_close_to_fp32_on_marc(analyzer, data_dir):
    """``quantize="int8"``: trunk and both branches run dynamic int8 Linear layers; on 200 MARC test
    reviews its sentiment labels agree with fp32 on 91 % (measured; the floor sits a few points
    under) and its intents on ~100 %. Below the 99 % the issue asks of labels: int8 stays off by default."""
    import random

    import torch

    from ecrec.learning.datasets import load_marc
    from ecrec.text.encoder import EncoderConfig, TextEncoder
    from ecrec.text.sentiment import TextAnalyzer, head_path, intent_head_path, load_head

    enc = TextEncoder(EncoderConfig(quantize="int8"))
    int8 = TextAnalyzer(enc, load_head(head_path(None, "e5-small"), enc), load_head(intent_head_path(None, "e5-small"), enc))
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(enc.model.encoder.layer[0].intermediate.dense, dynamic)
    assert isinstance(int8.head.branch.layers[0].intermediate.dense, dynamic)
    assert isinstance(int8.intent_head.branch.layers[0].intermediate.dense, dynamic)
    assert int8.version.startswith("e5-small-int8+")
    texts = [t for lang in ("zh", "en") for t in random.Random(1).sample(load_marc(data_dir, lang, "test")[0], 100)]
    a, b = analyzer.analyze(texts), int8.analyze(texts)
    sentiment = np.mean([x.sentiment.label == y.sentiment.label for x, y in zip(a, b)])
    intent = np.mean([x.intent.label == y.intent.label for x, y in zip(a, b)])
    cos = np.mean([float(x.vector @ y.vector) for x, y in zip(a, b)])
    assert sentiment >= 0.87 and intent >= 0.97 and cos >= 0.985, (sentiment, intent, cos)
