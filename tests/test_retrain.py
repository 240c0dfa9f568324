"""Retraining's data and decision: labelled reviews out of the event store, promotion only if not worse."""
import numpy as np
import pytest

from ecrec.events import Event
from ecrec.operations.retrain import labelled_reviews, should_promote
from ecrec.sentiment import Clause, Sentiment, TextAnalysis
from ecrec.shard import ProfileShard
from ecrec.store import SQLiteStore

DIM = 8


def _analysis(text):
    s = Sentiment("neutral", {"positive": 0.3, "neutral": 0.4, "negative": 0.3})
    v = np.eye(DIM, dtype=np.float32)[0]
    return TextAnalysis(text, "zh", False, s, v, [Clause(text, s, v)])


def test_labelled_reviews_come_out_of_the_store(tmp_path):
    stores = [SQLiteStore(tmp_path / f"s{i}.db") for i in range(2)]
    shards = [ProfileShard(s, DIM, snapshot_every=3) for s in stores]
    v = np.eye(DIM, dtype=np.float32)
    rows = [("u1", "质量很好", 5), ("u1", "一般般", 3), ("u2", "太差了", 1), ("u3", "还行", None)]
    for j, (user, text, rating) in enumerate(rows):
        shard = shards[0 if user in ("u1", "u3") else 1]  # a user lives on one shard
        shard.apply(Event(user_id=user, type="review", text=text, rating=rating, item_id="p1", ts=100.0 + j,
                          event_id=f"r{j}"), v[1], _analysis(text))
        shard.apply(Event(user_id=user, type="click", item_id="p2", ts=200.0 + j, event_id=f"c{j}"), v[2], None)
    got = sorted((r["user_id"], r["text"], r["label"], r["rating"]) for r in labelled_reviews(stores))
    assert got == [("u1", "一般般", "neutral", 3), ("u1", "质量很好", "positive", 5), ("u2", "太差了", "negative", 1)]
    assert [r["text"] for r in labelled_reviews(stores, since=101.5)] == ["太差了"]
    shards[0].delete("u1")  # erased users leave the training data too
    assert [r["text"] for r in labelled_reviews(stores)] == ["太差了"]


def test_promotion_rule():
    serving = {"marc_zh": {"accuracy": 0.69, "macro_f1": 0.62}, "marc_en": {"accuracy": 0.73, "macro_f1": 0.68}}
    better = {"marc_zh": {"accuracy": 0.70, "macro_f1": 0.62}, "marc_en": {"accuracy": 0.73, "macro_f1": 0.69}}
    ok, why = should_promote(better, serving)
    assert ok and "marc_zh" in why
    worse = {"marc_zh": {"accuracy": 0.72, "macro_f1": 0.60}, "marc_en": {"accuracy": 0.75, "macro_f1": 0.70}}
    ok, why = should_promote(worse, serving)
    assert not ok and "marc_zh macro_f1 0.6000 < 0.6200" in why
    assert should_promote(worse, serving, tolerance=0.03)[0]
    assert not should_promote({"marc_zh": better["marc_zh"]}, serving)[0]  # a set it was not evaluated on


def test_labelled_files_name_the_bad_line(tmp_path, data_dir):
    """``read_labelled`` for both tasks: labels become the task's class ids; an unknown label or a
    line that is not JSON is refused with its line number, before any training starts."""
    from ecrec.finetune_data import read_labelled
    from ecrec.intent_data import intent_labels

    intents = intent_labels(str(data_dir))
    assert len(intents) == 28 and intents[-1] == "none" and "cancel_order" in intents
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "取消订单", "label": "cancel_order"}\n\n{"text": "随便看看", "label": "none"}\n')
    texts, y = read_labelled(f, intents)
    assert texts == ["取消订单", "随便看看"] and list(y) == [intents.index("cancel_order"), 27]
    f.write_text('{"text": "ok", "label": "positive"}\n')
    assert list(read_labelled(f)[1]) == [2]  # sentiment by default
    with pytest.raises(ValueError, match=r"t.jsonl:1: needs a text and a label"):
        read_labelled(f, intents)  # "positive" is no intent
    f.write_text('{"text": "ok", "label": "positive"}\nnot json\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: not JSON"):
        read_labelled(f)
