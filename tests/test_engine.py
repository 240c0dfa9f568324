"""The catalog engine (``ecrec.engine``): the in-process Recommender's answers are the parts' own
(search, content, chat product answers), an engine read from artifacts and fed the catalog log's
rows answers as the Recommender does, and the event weights are read in one place."""
from __future__ import annotations

import time

import numpy as np
import pytest

from ecrec.content.library import DEMO_CONTENT, load_content
from ecrec.engine import CatalogEngine, without_price
from ecrec.profiles.events import Event
from ecrec.retrieval.index import Filters

NOW = time.time()
EVENTS = [{"type": "review", "item_id": "phones-001", "rating": 4, "text": "这款手机拍照效果很好，但电池续航不太理想"},
          {"type": "click", "item_id": "cameras-002"},
          {"type": "question", "text": "Which lens is best for portraits?"}]


def _replay(rec, user: str) -> None:
    for n, e in enumerate(EVENTS):
        rec.ingest(Event(user_id=user, ts=NOW - 10 + n, **e))


def test_search_is_hybrid_search_over_the_same_catalog(demo_rec, analyzer):
    from ecrec.search.hybrid import HybridSearch
    from ecrec.search.lexical import LexicalIndex

    _replay(demo_rec, "fan")
    direct = HybridSearch(LexicalIndex(demo_rec.items.values()), demo_rec.index, demo_rec.items)
    for query, user, filters in [("降噪耳机", None, None), ("noise cancelling headphones", "fan", None),
                                 ("camera", "fan", Filters(max_price=3000.0))]:
        vec = analyzer.encoder.encode([query], "query")[0]
        want = direct.search(query, vec, 8, filters, demo_rec.profiles.get(user), NOW)
        got = demo_rec.search(query, user, 8, filters, now=NOW)
        assert [g["item_id"] for g in got] == [w.item_id for w in want] and len(got) == 8
        assert [g["score"] for g in got] == [w.score for w in want]


def test_content_is_ranked_next_to_the_top_ten_products(demo_rec, encoder):
    from ecrec.content.library import ContentLibrary
    from ecrec.text.encoder import default_home, encode_cached

    docs = load_content(DEMO_CONTENT)
    x = encode_cached(encoder, [d.embedding_text() for d in docs], "passage", default_home() / "cache")
    demo_rec.add_content(docs, x)
    library = ContentLibrary.build(docs, x, encoder.dim)
    _replay(demo_rec, "reader")
    p = demo_rec.profile("reader")
    shown = [(r.item_id, demo_rec.items[r.item_id].top_category) for r in demo_rec.recommend("reader", 10, now=NOW)]
    titles = {i: demo_rec.items[i].title for i in list(p.recent_positive) + list(p.purchased)}
    want = [library.hit_json(h, True) for h in library.for_profile(p, 5, NOW, "en", titles, shown)]
    cold, got = demo_rec.content_for("reader", 5, "en", explain=True, now=NOW)
    assert not cold and got == want and len(got) == 5
    assert demo_rec.content_for(None, 3, None, now=NOW)[0]  # no profile: cold, the newest


def test_a_price_nobody_meets_is_dropped_and_said(demo_rec):
    cams = frozenset(["cameras"])
    question = "any waterproof camera under 2000?"
    items, relaxed = demo_rec.product_answer("shopper", question, 5, Filters(categories=cams, max_price=1.0), now=NOW)
    unfiltered, _ = demo_rec.product_answer("shopper", question, 5, Filters(categories=cams), now=NOW)
    assert relaxed and items == unfiltered and len(items) == 5
    assert all(i["category"][0] == "cameras" for i in items)
    met, relaxed = demo_rec.product_answer("shopper", question, 5, Filters(categories=cams, max_price=1e6), now=NOW)
    assert not relaxed and met == unfiltered  # every camera is under 1e6: the same list, nothing said
    rec = demo_rec.recommend("shopper", 5, Filters(categories=cams), text=question, now=NOW)
    assert [i["item_id"] for i in items] == [r.item_id for r in rec]
    assert without_price(Filters(categories=cams)) is None and without_price(None) is None
    assert without_price(Filters(categories=cams, min_price=5.0, in_stock=True)) == Filters(categories=cams,
                                                                                           in_stock=True)


def test_engine_from_artifacts_and_the_log_answers_as_the_recommender(demo_rec, encoder, tmp_path):
    """The graph's path without Ray: an index artifact + content artifact, then the catalog log's
    rows (an upsert and a delete) and counters, give the in-process Recommender's answers."""
    from ecrec.content.artifact import write_content_artifact
    from ecrec.retrieval.artifact import write_artifact
    from ecrec.recommender import covisit_pair
    from ecrec.retrieval.ranking import RankingConfig
    from ecrec.text.encoder import default_home, encode_cached

    ids = list(demo_rec.items)
    write_artifact([demo_rec.items[i] for i in ids], np.stack([demo_rec.index.vector(i) for i in ids]),
                   tmp_path / "index", "e5-small")
    docs = load_content(DEMO_CONTENT)
    x = encode_cached(encoder, [d.embedding_text() for d in docs], "passage", default_home() / "cache")
    write_content_artifact(docs, x, tmp_path / "content", "e5-small")
    demo_rec.add_content(docs, x)
    engine = CatalogEngine.from_artifacts(tmp_path / "index", tmp_path / "content",
                                          ranking=RankingConfig(explore_share=0.0), sequence=demo_rec.ranker.sequence)
    new = demo_rec.items["phones-001"].model_copy(update={"id": "phones-new", "title": "Lumio Z9 Zoom Phone"})
    vec = demo_rec.index.vector("cameras-002")
    demo_rec.add_items([new], vec[None, :])
    demo_rec.remove_item("books-001")
    assert engine.apply_log([(1, "phones-new", new.model_dump_json(), vec.tobytes()),
                             (2, "books-001", None, None)]) == 2
    pairs = []  # what the board spreads: (item, the shopper's recent items before it), as shards send them
    for n, e in enumerate(EVENTS):
        before = demo_rec.profile("twin").recent
        demo_rec.ingest(Event(user_id="twin", ts=NOW - 10 + n, **e))
        if covisit_pair(e.get("item_id"), demo_rec.profile("twin").recent):
            pairs.append((e["item_id"], list(before)))
    s = demo_rec.stats
    engine.apply_log([], pairs, (dict(s.popularity), dict(s.impressions), dict(s.clicks)))
    p = demo_rec.profile("twin")
    assert engine.rank(p, 10, None, None, None, NOW) == (False, [
        {"item_id": r.item_id, "title": demo_rec.items[r.item_id].title, "score": r.score, "source": r.source,
         "reason": r.reason, "category": demo_rec.items[r.item_id].category, "price": demo_rec.items[r.item_id].price,
         "parts": r.parts} for r in demo_rec.recommend("twin", 10, now=NOW)])
    qvec = encoder.encode(["Z9 zoom"], "query")[0]
    assert engine.search(p, "Z9 zoom", qvec, 5, None, NOW) == demo_rec.search("Z9 zoom", "twin", 5, now=NOW)
    assert engine.content_for(p, 4, None, True, NOW) == demo_rec.content_for("twin", 4, None, True, NOW)
    assert engine.related("phones-002", "content", 3, "en") == demo_rec.related("phones-002", "content", 3, "en")
    assert engine.related("books-001", "products", 3, None) is None
    total, page = engine.list_items("phones", 100, 0)
    assert total == sum(it.top_category == "phones" for it in demo_rec.items.values()) and page[-1]["id"] == "phones-new"
    found, categories = engine.chat_lookup("the Z9 please", None)
    assert found["item_id"] == "phones-new" and (found, categories) == demo_rec.engine.chat_lookup("the Z9 please", None)


def test_event_weights_and_click_types_are_read_in_one_place():
    from ecrec.operations.attribution import ATTRIBUTED_TYPES
    from ecrec.profiles.events import CLICK_TYPES
    from ecrec.profiles.profile import ProfileConfig

    cfg = ProfileConfig(cart=3.0)
    assert [cfg.interaction(t) for t in ("view", "click", "cart", "purchase", "dislike", "review")] == [
        (0.2, False), (0.5, True), (3.0, True), (1.5, True), (-2.0, False), (0.0, False)]
    assert ATTRIBUTED_TYPES == CLICK_TYPES == ("click", "cart", "purchase")
