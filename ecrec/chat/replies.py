"""Reply templates (``ecrec/data/chat_replies.json``, zh + en, several per case) and the reply language."""
from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

from ecrec.text.language import detect_language, is_chinese

REPLIES_FILE = Path(__file__).parent.parent / "data" / "chat_replies.json"
LANGUAGES = ("zh", "en")
# ``none`` is not a service intent: named when it is one of the two candidates of a clarifying question
NONE_NAME = {"zh": "咨询商品或随便聊聊", "en": "ask about products or just chat"}
# for an intent the templates do not know (an intent head trained on other labels)
GENERIC_DONE = {"zh": "已收到您的请求，我们会尽快处理。", "en": "Got it: your request has been passed on and will be handled shortly."}
# what carries no language: emails, phone and order numbers
_NO_LANGUAGE = re.compile(r"\S+@\S+|[A-Za-z]*\d[\w-]*")


@lru_cache(maxsize=4)
def templates(path: str = str(REPLIES_FILE)) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def reply_language(text: str, requested: str | None, previous: str | None) -> str:
    """The language to answer in: the one asked for; else the message's (``is_chinese``, which
    also settles a mixed message); else, for a message with no words (an order number), the
    conversation's so far; else English."""
    if requested in LANGUAGES:
        return requested
    text = _NO_LANGUAGE.sub(" ", text)
    if detect_language(text) != "other":
        return "zh" if is_chinese(text) else "en"
    return previous if previous in LANGUAGES else "en"


def pick(options: list[str], *seed) -> str:
    """A stable choice among variants (the same session and turn always get the same one)."""
    h = hashlib.blake2b("\x00".join(map(str, seed)).encode(), digest_size=4).digest()
    return options[int.from_bytes(h, "little") % len(options)]


def intent_name(intent: str, lang: str) -> str:
    if intent == "none":
        return NONE_NAME[lang]
    return templates()["intent_names"].get(intent, {}).get(lang, intent.replace("_", " "))


def render(path: tuple[str, ...], lang: str, seed: tuple, **slots) -> str:
    """The template at ``path`` (e.g. ("done", "track_order")) in ``lang``, slots filled in."""
    node = templates()
    for key in path:
        node = node[key]
    return pick(node[lang], *seed).format(**slots)
