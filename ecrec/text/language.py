"""Which language a text is in: the one definition every module uses (ranking reasons, content
language, chat replies, augmentation, sentiment and the encoder's language sign).

The shop speaks Chinese and English. Two counts decide: Han characters (CJK ideographs) and
Latin words (runs of two or more ASCII letters). Digits, punctuation, emoji, spaces and single
letters belong to neither language, so an order number or "!!!" never tips a text either way.
"""
from __future__ import annotations

import re

# Han characters: CJK Unified Ideographs, Extension A and the compatibility ideographs (NFKC maps
# most of the latter to the unified block, but item titles are not always normalised). A string
# to put inside a regex character class, e.g. rf"[{HAN_CHARS}]".
HAN_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
HAN = re.compile(rf"[{HAN_CHARS}]")
LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def counts(text: str) -> tuple[int, int]:
    """(Han characters, Latin words) in ``text``."""
    return len(HAN.findall(text)), len(LATIN_WORD.findall(text))


def is_chinese(text: str) -> bool:
    """True when ``text`` has Han characters and at least as many of them as Latin words.

    Chinese shoppers mix in English freely ("能用apple pay吗", "sign up在哪", "iPhone 15 拍照怎么样")
    while English ones type a Chinese word only now and then ("does this 耳机 have ANC?"), so a Han
    character counts for as much as a Latin word (about half of what it carries). On the project's
    labelled texts (MARC zh/en reviews, the zh intents, none_texts, chat_upset), among the texts
    with any Han: this rule misreads 8, "hahaha 你好" and 7 English sentences with a Chinese
    tail filed as zh intents ("how long does shipping take to 广州？"); "any Han at all" misreads 3, English
    sentences such as "does this 耳机 have ANC?"; "Han >= 2 x words" (the chat's old rule) 28,
    such as "能用apple pay吗" and "退kuan". A text without Han is never Chinese: empty, digits
    and punctuation included."""
    han, words = counts(text)
    return han > 0 and han >= words


def detect_language(text: str) -> str:
    """'zh', 'en', or 'mixed' from the share of Han characters in the content (a Latin word
    weighs two Han characters, about what one carries); 'other' when there is neither.

    Finer than ``is_chinese`` for the models that treat mixed text apart (sentiment, the
    encoder's language sign); 'zh' always is Chinese and 'en' never is."""
    han, words = counts(text)
    if han == 0 and words == 0:
        return "other"
    share = han / (han + 2 * words)
    if share >= 0.8:
        return "zh"
    if share <= 0.2:
        return "en"
    return "mixed"
