"""One turn of a customer-service conversation: the policy, Ray-free and deterministic.

Like a dialogue framework's rules and forms: a service intent that needs a slot asks for it and is
done only once it is filled; a low-confidence intent gets a clarifying question naming the two
likeliest intents; a shopper who asks for a human, stays upset for two turns, or is not understood
for two turns is handed to a human. Text that is not a service request (intent ``none``) goes to
small talk or to product recommendations, never to a service template.

Without an intent model (an app switched to ``intent_head=none``) the chat still answers what needs
no intent: product questions, small talk, a request for a human, and the answer to a question the
bot asked earlier; any other message may be a service request it cannot read, so it goes to a human.
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass, field

from ecrec.chat import replies
from ecrec.chat.session import TREND, ChatSession
from ecrec.chat.slots import PriceRange, categories, extract, price_range
from ecrec.chat.upset import UpsetDetector
from ecrec.text.language import HAN, LATIN_WORD
from ecrec.text.prepare import TextError

# What each service intent needs before it is done ("contact": an email or a phone number).
NEEDS = {
    **{i: "order_id" for i in ("track_order", "cancel_order", "change_order", "get_refund", "track_refund",
                               "get_invoice", "check_invoices", "payment_issue", "change_shipping_address")},
    **{i: "contact" for i in ("recover_password", "delete_account", "edit_account", "create_account",
                              "registration_problems", "newsletter_subscription", "switch_account")},
    "place_order": "product",
}
HUMAN = "contact_human_agent"
# Words that ask for a person outright; the classifier's contact_human_agent covers the rest.
# "ask an agent how to ..." is not one (Bitext writes requests that way), nor is "人工费" or
# "人工草坪", nor a negated request ("不要转人工", "I don't need a human agent").
ASKS_FOR_HUMAN = re.compile(
    r"转人工|人工客服|找人工|要人工|人工服务|真人客服"
    r"|\b(?:talk|speak|chat)\s+(?:to|with)\s+(?:a\s+|an\s+|some\s+|your\s+)?(?:human|real person|person|someone"
    r"|somebody|agent|representative|operator)\b|\bhuman agent\b|\blive (?:agent|person)\b",
    re.I)
NEGATED = re.compile(r"(?:不|别|无需|不用|没)\S{0,2}$|(?:don't|do not|no need to|not)\s+(?:\w+\s+){0,2}$", re.I)


def asks_for_human(text: str) -> bool:
    m = ASKS_FOR_HUMAN.search(text)
    return bool(m) and not NEGATED.search(text[max(0, m.start() - 24):m.start()])


GREETING = re.compile(r"^(?:你好|您好|嗨|哈喽|在吗|在不在|hi|hello|hey|good (?:morning|afternoon|evening))\W*$", re.I)
THANKS = re.compile(r"^(?:谢谢|多谢|感谢|谢啦|thanks?(?: you)?|thx|cheers|ty)\W*(?:\w+\W*)?$", re.I)
BYE = re.compile(r"^(?:再见|拜拜|bye|goodbye|see you)\W*$", re.I)
PRODUCT_CUES = re.compile(
    r"有没有|有什么|推荐|哪款|哪个好|想买|适合|值得买|求推荐|便宜|性价比"
    r"|\bany\b|recommend|suggest|looking for|which .+ (?:is|are) (?:best|good)|\bbest\b|cheap|\bbuy\b|want an?\b",
    re.I)


@dataclass(frozen=True)
class Understanding:
    """What the encoder said about the message (from ``TextAnalysis``)."""

    intent: str
    confidence: float
    top: list[tuple[str, float]]
    clarify: bool
    sentiment: str
    probs: dict[str, float] = field(default_factory=dict)
    upset: bool = False  # the shopper is upset (``ecrec.chat.upset``): two such turns escalate
    intents: bool = True  # an intent model read the message (False: ``intent`` is a stand-in "none")


@dataclass
class Turn:
    reply: str
    route: str  # service | slot | clarify | escalate | product | smalltalk
    actions: list[dict] = field(default_factory=list)
    escalate: bool = False
    product_query: bool = False  # answer with recommendations (the ingress fetches them)
    price: PriceRange = field(default_factory=PriceRange)
    categories: list[str] = field(default_factory=list)
    slots: dict = field(default_factory=dict)  # the slots found in this message


def _slot_value(slots: dict, need: str) -> str | None:
    if need == "contact":
        return slots.get("email") or slots.get("phone")
    if need == "product":
        p = slots.get("product")
        return p["title"] if p else None
    return slots.get(need)


def respond(state: ChatSession, message: str, u: Understanding, lang: str, now: float,
            product: dict | None = None, known_categories: frozenset[str] | None = None) -> tuple[ChatSession, Turn]:
    """The next state and this turn's answer (``state`` is not modified)."""
    s = dataclasses.replace(state, slots=dict(state.slots), sentiment=list(state.sentiment),
                            intents=list(state.intents))
    s.turns += 1
    s.updated_at = now
    s.language = lang
    seed = (s.session_id, s.turns)
    found = extract(message, expecting=NEEDS.get(s.pending_intent or ""))
    msg_slots = found.as_dict()
    if product:
        msg_slots["product"] = product
    s.slots.update(msg_slots)
    s.sentiment = (s.sentiment + [u.sentiment])[-TREND:]
    if u.intents:
        s.intents = (s.intents + [u.intent])[-TREND:]
    s.negative_streak = s.negative_streak + 1 if u.upset else 0
    pending_need = NEEDS.get(s.pending_intent or "")
    # The answer to the bot's question: the slot is there, and the message is that answer rather
    # than a new request ("don't cancel, just tell me where order 12345678 is" is a new request).
    fills_pending = (pending_need is not None and _slot_value(msg_slots, pending_need) is not None
                     and (u.intent in (s.pending_intent, "none") or _bare(message, msg_slots)))
    s.low_confidence_streak = 0 if (fills_pending or not u.clarify) else s.low_confidence_streak + 1

    def finish(turn: Turn) -> tuple[ChatSession, Turn]:
        turn.slots = msg_slots
        s.last_reply = turn.reply
        return s, turn

    def escalate(reason: str) -> tuple[ChatSession, Turn]:
        first = not s.escalated
        s.escalated, s.escalation_reason = True, s.escalation_reason or reason
        text = replies.render(("escalate", reason), lang, seed) if first else replies.render(("escalated",), lang, seed)
        return finish(Turn(text, "escalate", [{"type": "handoff", "reason": s.escalation_reason,
                                               "pending_intent": s.pending_intent, **_public(s.slots)}]
                           if first else [], escalate=True))

    if s.escalated:
        return escalate(s.escalation_reason or "asked")
    if (u.intent == HUMAN and not u.clarify) or asks_for_human(message):
        return escalate("asked")
    if s.negative_streak >= 2:
        return escalate("negative")
    if s.low_confidence_streak >= 2:
        return escalate("low_confidence")

    if fills_pending:  # the answer to the bot's question completes the pending task
        return finish(_complete(s, s.pending_intent, lang, seed))
    if u.clarify:
        a, b = (u.top + [("none", 0.0)])[:2]
        text = replies.render(("clarify",), lang, seed, a=replies.intent_name(a[0], lang),
                              b=replies.intent_name(b[0], lang))
        return finish(Turn(text, "clarify"))
    if u.intent != "none":
        need = NEEDS.get(u.intent)
        if need is not None and _slot_value(s.slots, need) is None:
            same = s.pending_intent == u.intent
            s.pending_intent = u.intent
            text = replies.render(("reask" if same else "ask", need), lang, seed,
                                  intent_name=replies.intent_name(u.intent, lang))
            return finish(Turn(text, "slot"))
        return finish(_complete(s, u.intent, lang, seed))

    # Not a service request: small talk, or a product question answered from the catalog.
    price = price_range(message)
    cats = categories(message, known_categories)
    if price or cats or product or PRODUCT_CUES.search(message):
        s.pending_intent = None
        return finish(Turn("", "product", product_query=True, price=price, categories=cats))
    if pending_need is not None:  # still waiting for the slot: ask again, in other words
        text = replies.render(("reask", pending_need), lang, seed,
                              intent_name=replies.intent_name(s.pending_intent, lang))
        return finish(Turn(text, "slot"))
    kind = ("greeting" if GREETING.match(message) else "thanks" if THANKS.match(message)
            else "bye" if BYE.match(message) else "other")
    if kind == "other" and not u.intents:  # perhaps a service request no model read: a person does
        return escalate("low_confidence")
    return finish(Turn(replies.render(("smalltalk", kind), lang, seed), "smalltalk"))


def _bare(message: str, slots: dict) -> bool:
    """Little besides the slot values: "订单号是 2023110588812", "it's li@example.com"."""
    rest = message
    for v in slots.values():
        if isinstance(v, str):
            rest = rest.replace(v, " ")
    return len(LATIN_WORD.findall(rest)) + (len(HAN.findall(rest)) + 1) // 2 <= 4


def _public(slots: dict) -> dict:
    out = {k: v for k, v in slots.items() if k != "product"}
    if slots.get("product"):
        out["item_id"] = slots["product"]["item_id"]
    return out


def _complete(s: ChatSession, intent: str, lang: str, seed: tuple) -> Turn:
    """The task is done: the action a shop wires to its systems, and a reply that says so."""
    need = NEEDS.get(intent)
    fill = {}
    action = {"type": intent}
    if need == "order_id":
        fill["order_id"] = action["order_id"] = s.slots["order_id"]
    elif need == "contact":
        fill["contact"] = _slot_value(s.slots, "contact")
        action.update({k: s.slots[k] for k in ("email", "phone") if s.slots.get(k)})
    elif need == "product":
        fill["product"] = s.slots["product"]["title"]
        action["item_id"] = s.slots["product"]["item_id"]
    for k in ("order_id", "amount") if need != "order_id" else ("amount",):
        if s.slots.get(k) is not None and intent in ("complaint", "get_refund", "payment_issue"):
            action[k] = s.slots[k]
    if need is None and s.slots.get("product") and intent in ("complaint", "review"):
        action["item_id"] = s.slots["product"]["item_id"]
    s.pending_intent = None
    if intent not in replies.templates()["done"]:  # a custom intent head's label: a generic answer
        return Turn(replies.GENERIC_DONE[lang], "service", [action])
    return Turn(replies.render(("done", intent), lang, seed, **fill), "service", [action])


def check_message(text: str) -> None:
    """A chat message must hold a word or a number: only emoji or symbols cannot be understood.

    Raises:
        TextError: naming what was wrong (the ingress answers 422).
    """
    if not any(unicodedata.category(ch)[0] in "LN" for ch in text):
        raise TextError("has no words or numbers to understand (only emoji, symbols or punctuation)")


def understanding(analysis, upset=None) -> Understanding:
    """From a ``TextAnalysis``; ``upset``: an ``UpsetDetector``. An analysis without an intent (the
    encoder serves ``intent_head=none``) reads as intent ``none`` with ``intents=False``."""
    upset = upset if upset is not None else UpsetDetector()
    i = analysis.intent
    if i is None:
        return Understanding("none", 0.0, [], False, analysis.sentiment.label, analysis.sentiment.probs,
                             upset(analysis), intents=False)
    return Understanding(i.label, i.confidence, [tuple(t) for t in i.top], i.clarify, analysis.sentiment.label,
                         analysis.sentiment.probs, upset(analysis))


def product_reply(lang: str, seed: tuple, n: int, relaxed: bool) -> str:
    """The reply above a product answer's items; ``relaxed``: nothing matched the stated filters,
    so the items shown are the nearest without the price bounds."""
    if n == 0:
        return replies.render(("no_products",), lang, seed)
    found = replies.render(("products",), lang, seed, n=n)
    return replies.render(("no_products",), lang, seed) + " " + found if relaxed else found
