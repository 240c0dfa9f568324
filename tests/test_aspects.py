"""Aspect terms and their polarity (issue 31): the APC reader, BIO <-> character offsets, the
taxonomy, and the shipped aspect branch on real dev rows and on the seed review."""
from __future__ import annotations

import pytest

from ecrec.learning.aspect_data import (APC_FILES, group_rows, read_apc, spans_to_tags, tags_to_spans,
                                        token_ranges)
from ecrec.text.aspects import PREFIX, Taxonomy, aspect_path

SEED = "这款手机拍照效果很好，但电池续航不太理想"


def test_apc_reader_restores_text_and_term_offsets(data_file):
    phone = read_apc(data_file("aspects/zh/phone.train.txt"), spaced=True, lang="zh")
    assert (phone[0].text, phone[0].term, phone[0].start, phone[0].label) == ("图标很靓哦", "图标", 0, 2)
    camera = read_apc(data_file("aspects/zh/camera.train.txt"), spaced=True, lang="zh")
    twice = [r for r in camera if r.text == "屏不比屏差"]  # "$T$ 不 比 $T$ 差": the term stands twice
    assert [(r.start, r.end) for r in twice] == [(0, 1), (3, 4)]
    hair = read_apc(data_file("aspects/zh/hair.train.txt"), lang="zh")
    assert hair[0].text.startswith("实物产品，第一次用精油是买的试用，用完之后惊艳了，手上头发一点都不油，完全被吸收")
    assert (hair[0].term, hair[0].start, hair[1].term, hair[1].start) == ("手上", 25, "头发一点都不油", 27)
    laptops = group_rows(read_apc(data_file("aspects/en/laptops.train.txt")), "en_laptops", "en", False)
    first = laptops[0]
    assert first.text == ("I charge it at night and skip taking the cord with me because of the good battery life .")
    assert [(first.text[a:b], label) for a, b, label in first.spans] == [("cord", 1), ("battery life", 2)]
    assert first.complete and sum(not s.complete for s in laptops) == 10  # terms written apart from their sentence


@pytest.mark.parametrize("text,spans", [
    (SEED, [(4, 8), (12, 16)]),  # 拍照效果, 电池续航
    ("I charge it at night because of the good battery life .", [(41, 53)]),
    ("The keyboard and the screen are fine", [(4, 12), (21, 27)]),
])
def test_bio_round_trip_on_the_tokenizer(encoder, text, spans):
    enc = encoder.tokenizer(PREFIX + text, return_offsets_mapping=True)
    ranges = token_ranges(enc["offset_mapping"], len(PREFIX), text)
    tags = spans_to_tags(ranges, spans)
    assert tags_to_spans(ranges, tags) == spans
    assert tags.count(1) == len(spans)  # one B per span


def test_taxonomy_maps_terms_and_keeps_the_rest():
    tax = Taxonomy()
    assert tax.aspect("电池续航") == "battery" and tax.aspect("拍照效果") == "camera"
    assert tax.aspect("Battery life") == "battery" and tax.aspect("屏幕大小") == "screen"
    assert tax.aspect("flux capacitor") is None
    assert tax.aspect("cord") is None  # "co" of nothing: Latin synonyms match whole words only


@pytest.fixture(scope="module")
def aspects(encoder):
    from ecrec.text.aspects import AspectAnalyzer

    if not aspect_path().exists():
        pytest.fail(f"{aspect_path()} is not shipped")
    return AspectAnalyzer.load(encoder)


def test_seed_review_aspects(aspects):
    """Extraction finds 电池续航 (battery, negative) but only 效果 of 拍照效果 (positive; the term
    misses 拍照, so it maps to no camera aspect): a known miss, reported in docs/EVALUATION.md.
    Given the terms, both come out right."""
    terms = aspects.analyze([SEED], category="phone")[0]
    got = [(t.term, t.aspect, t.label) for t in terms]
    assert got == [("效果", "效果", "positive"), ("电池续航", "battery", "negative")], got
    assert all(SEED[t.start : t.end] == t.term and not t.given for t in terms)
    given = aspects.analyze([SEED], given=[["拍照效果", "电池续航"]], category="phone")[0]
    assert [(t.aspect, t.label) for t in given] == [("camera", "positive"), ("battery", "negative")]


def test_given_terms_are_found_and_classified(aspects):
    terms = aspects.analyze(["The Battery life is awful but the screen is gorgeous"],
                            given=[["battery life", "SCREEN", "keyboard"]])[0]
    assert [(t.term, t.start, t.label, t.given) for t in terms] == [
        ("Battery life", 4, "negative", True), ("screen", 34, "positive", True), ("keyboard", -1, None, True)]
    assert abs(sum(terms[0].probs.values()) - 1) < 1e-5 and terms[2].probs is None


# the first 80 dev sentences of each (docs/EVALUATION.md has the whole dev splits). Measured with the
# shipped branch: laptops polarity 0.746 (118 rows), extraction F1 0.630; phone 0.817 (82 rows, neutral
# counts as wrong), extraction F1 0.686. Floors a few points below.
FLOORS = {"en_laptops": {"polarity": 0.70, "extraction": 0.58}, "zh_phone": {"polarity": 0.77, "extraction": 0.63}}


def test_shipped_branch_on_dev_slices(aspects, data_dir):
    from ecrec.evaluation.aspect_eval import evaluate_files
    from ecrec.learning.aspect_data import load_file, split_file

    names = list(APC_FILES)
    dev = {}
    for name in FLOORS:  # the dev split exactly as training held it out (seed 0 + the file's position)
        dev[name] = split_file(load_file(data_dir, name), 0.15, names.index(name))[1][:80]
    report = evaluate_files(aspects.encoder.model, aspects.encoder.tokenizer, aspects.branch, dev,
                            aspects.max_length)
    for name, floor in FLOORS.items():
        r = report["files"][name]
        assert r["polarity"]["accuracy"] >= floor["polarity"], (name, r["polarity"])
        assert r["extraction"]["f1"] >= floor["extraction"], (name, r["extraction"])
