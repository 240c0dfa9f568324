import pytest

from ecrec.text.prepare import TextError, clean, detect_language, split_clauses


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
