import pytest

from ecrec.text.language import detect_language, is_chinese
from ecrec.text.prepare import TextError, clean, split_clauses


def test_seed_review_splits_into_two_clauses():
    assert split_clauses("这款手机拍照效果很好，但电池续航不太理想") == ["这款手机拍照效果很好", "但电池续航不太理想"]


@pytest.mark.parametrize("text,expected", [
    ("质量很好。但是价格贵，可是值得", ["质量很好", "但是价格贵", "可是值得"]),
    ("声音不错，不过有点重", ["声音不错", "不过有点重"]),
    ("The camera is great, but the battery is weak. Shipping was fast!",
     ["The camera is great", "but the battery is weak", "Shipping was fast"]),
    ("Although it is heavy, the sound is amazing", ["Although it is heavy", "the sound is amazing"]),
    ("It works; however the app crashes", ["It works", "however the app crashes"]),
    ("不但好看而且便宜", ["不但好看而且便宜"]),  # 不但 is not a contrast
    ("Great phone", ["Great phone"]),
])
def test_clause_splitting(text, expected):
    assert split_clauses(text) == expected


def test_clean_normalises_and_strips_controls():
    c = clean("  ＡＢＣ\x00 hello\u200b\t\n  world！ ")
    assert c.text == "ABC hello world!"
    assert not c.truncated


def test_clean_truncates_and_flags_huge_text():
    c = clean("好" * 1_000_000)
    assert c.truncated and len(c.text) == 2000 and c.original_length == 1_000_000


@pytest.mark.parametrize("bad", ["", "   ", "\x00\x01\t", None, 42])
def test_clean_rejects_empty_or_non_text(bad):
    with pytest.raises(TextError):
        clean(bad)


@pytest.mark.parametrize("text,lang", [
    ("这款手机拍照效果很好", "zh"), ("The battery lasts two days", "en"),
    ("这个 laptop 的 keyboard 和 screen 都不错", "mixed"), ("12345 !!!", "other"),
])
def test_language_detection(text, lang):
    assert detect_language(text) == lang


@pytest.mark.parametrize("text,zh", [
    ("这款手机拍照效果很好", True), ("The battery lasts two days", False),
    ("能用apple pay吗", True),  # Chinese with an English name: 3 Han, 2 words
    ("sign up在哪", True), ("退kuan", True),  # a tie (2 Han : 2 words, 1 : 1) is Chinese
    ("this 面膜 is so hydrating, love it", False),  # English with a Chinese word: 2 Han, 6 words
    ("订单 12345678901234", True),  # digits count for neither (the old augmentation rule said no)
    ("12345 !!!", False), ("？？？！！", False), ("👍👍", False), ("", False), ("a b c", False),
    ("\u3400\u4dbf", True), ("\uf900", True),  # Extension A and the compatibility block are Han too
])
def test_is_chinese_known_answers(text, zh):
    assert is_chinese(text) is zh


@pytest.mark.parametrize("text,lang,zh", [
    ("这款手机拍照效果很好", "zh", True), ("The battery lasts two days", "en", False), ("12345 !!!", "other", False),
    ("这个 laptop 的 keyboard 和 screen 都不错", "mixed", True),  # 7 Han, 3 words
    ("the 蓝牙耳机 battery is weak today", "mixed", False),  # 4 Han, 5 words
    ("does this 耳机 have ANC?", "en", False),
])
def test_is_chinese_agrees_with_detect_language(text, lang, zh):
    """'zh' is always Chinese, 'en' and 'other' never; a 'mixed' text is settled by the counts."""
    assert detect_language(text) == lang and is_chinese(text) is zh
