"""The chat policy on the real shipped model (no Ray): slot filling, clarify, escalation, routing,
durable sessions, and the calibrated "upset" threshold."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ecrec.chat.dialogue import check_message, respond, understanding
from ecrec.chat.replies import reply_language
from ecrec.chat.session import ChatSession, ChatSessions
from ecrec.chat.upset import UpsetDetector, calm_requests, train_upset_probe, upset_report, upset_rows
from ecrec.text.prepare import TextError

T0 = 1_700_000_000.0


class Bot:
    """Drives ``respond`` the way the ingress does (without the product lookup)."""

    def __init__(self, analyzer, user="u1"):
        self.analyzer, self.state = analyzer, ChatSession.new(user, T0)
        self.upset = UpsetDetector.load("e5-small", analyzer.encoder.dim)

    def say(self, message, product=None, now=None, intents=True):
        [a] = self.analyzer.analyze([message])
        if not intents:  # what the encoder answers once it serves intent_head=none
            a = dataclasses.replace(a, intent=None)
        lang = reply_language(a.text, None, self.state.language if self.state.turns else None)
        self.state, turn = respond(self.state, a.text, understanding(a, self.upset), lang,
                                   now or T0 + self.state.turns, product)
        return turn


def test_tracking_asks_for_the_order_number_then_completes_zh(analyzer):
    bot = Bot(analyzer)
    t = bot.say("我的快递到哪了？")
    assert t.route == "slot" and not t.actions and "订单" in t.reply and bot.state.pending_intent == "track_order"
    t = bot.say("订单号是 2023110588812")
    assert t.route == "service" and t.actions == [{"type": "track_order", "order_id": "2023110588812"}]
    assert "2023110588812" in t.reply and not t.escalate and bot.state.pending_intent is None
    assert bot.state.language == "zh" and bot.state.turns == 2


def test_tracking_en_with_a_bare_number(analyzer):
    bot = Bot(analyzer)
    assert bot.say("Where is my package?").route == "slot"
    t = bot.say("88812345")
    assert t.actions == [{"type": "track_order", "order_id": "88812345"}] and "88812345" in t.reply
    assert bot.state.language == "en"  # a message of digits keeps the conversation's language


def test_an_unanswered_slot_is_asked_again(analyzer):
    bot = Bot(analyzer)
    bot.say("I forgot my password")
    t = bot.say("hmm let me think")
    assert t.route == "slot" and bot.state.pending_intent == "recover_password" and not t.actions
    t = bot.say("it's li.lei@example.com")
    assert t.actions == [{"type": "recover_password", "email": "li.lei@example.com"}]


@pytest.mark.parametrize("turns,lang", [
    (["你们这什么破东西，我要退款！", "等了一个星期还没人处理，气死我了，太差劲了"], "zh"),
    (["I want my money back for this garbage", "This is ridiculous, nobody answers me, terrible service!"], "en"),
])
def test_refund_complaint_escalates_after_two_angry_turns(analyzer, turns, lang):
    bot = Bot(analyzer)
    first = bot.say(turns[0])
    assert first.route == "slot" and not first.escalate and bot.state.pending_intent == "get_refund"
    second = bot.say(turns[1])
    assert second.escalate and second.route == "escalate" and bot.state.escalation_reason == "negative"
    assert second.actions[0]["type"] == "handoff" and second.actions[0]["pending_intent"] == "get_refund"
    assert reply_language(second.reply, None, None) == lang
    later = bot.say("好的" if lang == "zh" else "ok")
    assert later.escalate and not later.actions  # handed over once; later turns say a human is coming


def test_calm_service_turns_do_not_escalate(analyzer):
    """The review-trained sentiment calls these negative (p 0.7-0.85): the chat threshold must not."""
    bot = Bot(analyzer)
    for m in ("how do I cancel my order", "It's order 88812345", "我要取消订单", "订单号 2023110588812"):
        assert not bot.say(m).escalate, m


def test_chat_goes_on_without_an_intent_model(analyzer):
    """An encoder switched in place to intent_head=none analyses with no intent: the chat answered
    500 (``understanding`` read ``analysis.intent.label``). Without intents it still answers what
    needs none (products, small talk, a request for a human, the pending question's answer) and
    hands a request it cannot understand to a person at once, instead of guessing."""
    bot = Bot(analyzer)
    assert bot.say("我的快递到哪了？").route == "slot" and bot.state.pending_intent == "track_order"
    t = bot.say("订单号是 2023110588812", intents=False)  # the switch lands mid-conversation
    assert t.route == "service" and t.actions == [{"type": "track_order", "order_id": "2023110588812"}]
    assert bot.state.intents == ["track_order"]  # a turn without an intent records none
    t = bot.say("有没有适合拍照的手机？", intents=False)
    assert t.route == "product" and t.product_query and t.categories == ["phones"]
    assert bot.say("谢谢", intents=False).route == "smalltalk"
    assert not bot.state.escalated and bot.state.intents == ["track_order"]

    u = understanding(dataclasses.replace(analyzer.analyze(["hello"])[0], intent=None))
    assert (u.intent, u.confidence, u.top, u.clarify, u.intents) == ("none", 0.0, [], False, False)
    t = Bot(analyzer).say("can I talk to a human please", intents=False)
    assert t.escalate and t.actions[0]["reason"] == "asked"
    bot = Bot(analyzer)
    t = bot.say("I forgot my password", intents=False)  # a service request: not small talk
    assert t.escalate and t.route == "escalate" and bot.state.escalation_reason == "low_confidence"
    assert t.actions == [{"type": "handoff", "reason": "low_confidence", "pending_intent": None}]


@pytest.mark.parametrize("message", ["转人工", "我要找人工客服", "can I talk to a human please",
                                     "I want to speak to a real person"])
def test_asking_for_a_human_escalates_at_once(analyzer, message):
    bot = Bot(analyzer)
    t = bot.say(message)
    assert t.escalate and bot.state.escalation_reason == "asked"


def test_ask_an_agent_phrasing_is_not_a_request_for_a_human(analyzer):
    """Bitext writes requests as "ask an agent how to ...": a keyword rule on "agent" escalated
    1,036 of 4,534 held-out utterances through /v1/chat; only the classifier decides those."""
    bot = Bot(analyzer)
    t = bot.say("could you ask an agent how to open an account, please?")
    assert not t.escalate and t.route == "slot" and bot.state.pending_intent == "create_account"


@pytest.mark.parametrize("message", ["推荐一款人工草坪", "人工费怎么算", "不要转人工，我自己看看",
                                     "I don't need a human agent, thanks"])
def test_words_near_human_do_not_hand_over(message):
    from ecrec.chat.dialogue import asks_for_human

    assert not asks_for_human(message)


def test_a_new_request_with_the_slot_is_not_the_pending_task(analyzer):
    """Asked for an order number to cancel, the shopper changes their mind and names one to track:
    never a cancel_order action (found in review). The branch reads track_order at 0.72, under the
    clarify threshold, so the bot asks which is meant."""
    bot = Bot(analyzer)
    assert bot.say("I want to cancel my order").route == "slot" and bot.state.pending_intent == "cancel_order"
    t = bot.say("don't cancel it, just tell me where my order 12345678 is right now")
    assert not any(a["type"] == "cancel_order" for a in t.actions), t.actions
    assert t.route in ("clarify", "service") and (t.route == "clarify" or t.actions[0]["type"] == "track_order")
    t = bot.say("88812345")  # a bare number still answers the pending question
    assert t.actions == [{"type": "cancel_order", "order_id": "88812345"}]


def test_erasure_during_a_turn_keeps_nothing(tmp_path, analyzer):
    from ecrec.profiles.shard import ProfileShard
    from ecrec.profiles.store import SQLiteStore

    store = SQLiteStore(tmp_path / "p.db")
    shard = ProfileShard(store, 384)
    bot = Bot(analyzer, user="dora")
    bot.say("my email is dora@example.com, I forgot my password")
    shard.delete("dora", now=T0 + 5)  # lands while the turn is being answered
    assert shard.chat_commit(bot.state, 0) == (True, None)
    assert store.get_chat("dora", bot.state.session_id) is None


def test_low_confidence_asks_naming_two_intents_then_escalates(analyzer):
    bot = Bot(analyzer)
    [a] = analyzer.analyze(["想买星耀 X6"])
    assert a.intent.clarify  # under the branch's calibrated threshold
    t = bot.say("想买星耀 X6")
    names = [n for n in ("下单", "咨询商品") if n in t.reply]
    assert t.route == "clarify" and len(names) == 2, t.reply
    t = bot.say("想买星耀 X6")
    assert t.escalate and bot.state.escalation_reason == "low_confidence"


@pytest.mark.parametrize("message,cats,lo,hi", [
    ("有没有适合拍照的手机？", ["phones"], None, None),
    ("any waterproof camera under 2000?", ["cameras"], None, 2000),
    ("有没有1000到3000的降噪耳机", ["headphones"], 1000, 3000),
])
def test_product_questions_route_to_recommendations(analyzer, message, cats, lo, hi):
    t = Bot(analyzer).say(message)
    assert t.route == "product" and t.product_query and not t.actions
    assert t.categories == cats and (t.price.min_price, t.price.max_price) == (lo, hi)


@pytest.mark.parametrize("message,kind", [("你好", "greeting"), ("hello", "greeting"), ("thanks!", "thanks"),
                                          ("谢谢", "thanks")])
def test_small_talk_never_gets_a_service_template(analyzer, message, kind):
    from ecrec.chat.replies import templates

    t = Bot(analyzer).say(message)
    assert t.route == "smalltalk" and not t.actions
    assert any(t.reply == v for lang in ("zh", "en") for v in templates()["smalltalk"][kind][lang])


def test_place_order_fills_the_product_from_the_catalog(analyzer):
    bot = Bot(analyzer)
    t = bot.say("I want to place an order")
    assert t.route == "slot" and bot.state.pending_intent == "place_order"
    product = {"item_id": "phones-002", "title": "Lumio Air6 Camera Flagship Phone", "score": 0.8}
    t = bot.say("the Lumio Air6 please", product=product)
    assert t.actions == [{"type": "place_order", "item_id": "phones-002"}] and "Lumio Air6" in t.reply


@pytest.mark.parametrize("message", ["😀😀😀", "！？。", "   👍 "])
def test_only_emoji_or_symbols_is_refused(message):
    with pytest.raises(TextError, match="no words"):
        check_message(message)


def test_sessions_are_durable_expire_and_are_erased(tmp_path, analyzer):
    from ecrec.profiles.shard import ProfileShard
    from ecrec.profiles.store import SQLiteStore

    store = SQLiteStore(tmp_path / "p.db")
    shard = ProfileShard(store, 384)
    bot = Bot(analyzer, user="alice")
    bot.say("我的快递到哪了？")
    assert shard.chat_commit(bot.state, 0) == (True, None)
    assert shard.chat_commit(bot.state, 0) == (False, None)  # a second writer of turn 1 loses
    store.close()
    store = SQLiteStore(tmp_path / "p.db")  # a restarted shard keeps the conversation
    shard = ProfileShard(store, 384)
    got, status = shard.chats.get("alice", bot.state.session_id, now=T0 + 60)
    assert status == "ok" and got.pending_intent == "track_order" and got.turns == 1
    assert shard.chats.get("bob", bot.state.session_id, now=T0 + 60) == (None, "unknown")
    assert shard.chats.get("alice", bot.state.session_id, now=T0 + 3600) == (None, "expired")
    shard.chat_commit(bot.state, 0)
    assert shard.chats.purge(now=T0 + 3600) == 1  # abandoned sessions are swept, not only when read
    assert store.get_chat("alice", bot.state.session_id) is None  # an expired session is dropped
    shard.chat_commit(bot.state, 0)
    shard.delete("alice")
    assert store.get_chat("alice", bot.state.session_id) is None and store.count_rows("alice") == 0


def test_a_product_answer_is_a_question_event_for_the_profile(tmp_path, analyzer):
    from ecrec.profiles.events import Event
    from ecrec.profiles.shard import ProfileShard
    from ecrec.profiles.store import SQLiteStore

    shard = ProfileShard(SQLiteStore(tmp_path / "p.db"), 384)
    bot = Bot(analyzer, user="carol")
    bot.say("有没有适合拍照的手机？")
    [a] = analyzer.analyze(["有没有适合拍照的手机？"])
    event = Event(user_id="carol", type="question", text=a.text, ts=T0, event_id="chat:x:1")
    stored, version = shard.chat_commit(bot.state, 0, event, a)
    assert stored and version == 1
    assert np.dot(shard.get("carol").interest_vector(T0), a.vector) > 0.5


def test_upset_probe_on_held_out_messages(analyzer):
    """Angry messages against calm problem reports and requests it never trained on (zh + en):
    measured 0.88 recall at 0.05 false alarms (the sentiment label alone: 0.97 at 0.68)."""
    det = UpsetDetector.load("e5-small", analyzer.encoder.dim)
    assert det.probe is not None and det.threshold == 0.6
    _, held = upset_rows()
    analyses = analyzer.analyze([r["text"] for r in held])
    p = np.array([det.probability(a) for a in analyses])
    report = upset_report(p, np.array([r["upset"] for r in held]), det.threshold)
    assert report["recall"] >= 0.85 and report["false_alarms"] <= 0.08, report


def test_shipped_upset_probe_is_the_one_the_recipe_trains(analyzer, data_dir):
    fit, held = upset_rows()
    probe = train_upset_probe(analyzer, fit, calm_requests(data_dir))
    shipped = UpsetDetector.load("e5-small", analyzer.encoder.dim)
    retrained = UpsetDetector(probe, probe.info["threshold"])
    analyses = analyzer.analyze([r["text"] for r in held[:40]])
    assert probe.info["threshold"] == shipped.threshold
    np.testing.assert_allclose([retrained.probability(a) for a in analyses],
                               [shipped.probability(a) for a in analyses], atol=2e-3)


@pytest.mark.parametrize("message,want", [
    ("我想买星耀 X6", "phones-001"),  # brand + model word
    ("the Lumio Air6 please", "phones-002"),
    ("phones-003 还有货吗", "phones-003"),  # an item id verbatim
    ("where is my order", None),  # names no product
])
def test_product_mentions_resolve_against_the_catalog(demo_rec, analyzer, message, want):
    from ecrec.chat.products import ProductMentions, resolve

    items = dict(demo_rec.items)
    [a] = analyzer.analyze([message])
    got = resolve(message, a.vector, ProductMentions(items), items, demo_rec.index.vector)
    assert (got["item_id"] if got else None) == want, got
