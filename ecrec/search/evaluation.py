"""Search quality on Amazon Scientific (``ecrec eval-search``): known-item queries built from the
item text, lexical vs semantic vs hybrid, and personalized vs not.

Procedure (deterministic, seed 0):
- Each item's UniSRec text is "title. category path. brand." It is split back into those fields
  for the lexical index (title, brand, category words); the semantic half uses the same passage
  vectors as ``ecrec eval``.
- **Known-item queries.** A query names an item the way a shopper would: its product-type words
  (the last three alphabetic words of the title, without numbers, sizes or stop words, e.g.
  "adhesive-backed sanding roll"), with the brand in front for half of the queries. Relevant: the
  item and its near-duplicates (title-word Jaccard >= 0.5: the same product in other sizes or
  grits). 400 items tune the fusion weights (valid), 1,500 others are reported (test).
- **Noisy known-item queries.** The same queries as a shopper types them: one word of five or more
  letters gets one typo (a letter dropped, two swapped, or one replaced by a vowel; seed 1), e.g.
  "rubber lnied jaws". Real query logs carry typos in roughly one query in ten to one in four;
  BM25 misses a mistyped word entirely, the encoder's subwords do not. The fusion is chosen on the
  mean of the exact and noisy valid sets and reported on each test set and on their mean.
- **Personalized.** For users of ``Scientific.{valid,test}.inter``, the query is the product-type
  words of the item they picked next (no brand) and the one relevant item is that item. The same
  query is ranked without and with the profile built from the user's history (clicks, with the
  item vectors); the weight of the personal term is chosen on valid users, reported on test.
- Metrics: NDCG@10 and Recall@10 over all queries (a query whose items are not in the top 10
  scores 0).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ecrec.retrieval.catalog import Item
from ecrec.search.lexical import STOPWORDS

_ALPHA = re.compile(r"^[A-Za-z][A-Za-z-]*[A-Za-z]$")
_UNITS = frozenset("inch inches ounce ounces oz pack pcs piece pieces mm cm ml lb lbs gallon quart foot feet ft "
                   "count set yd grit".split())


def split_text(text: str) -> tuple[str, str, str]:
    """UniSRec's "title. categories. brand." back into (title, categories, brand)."""
    parts = [p.strip() for p in text.strip().rstrip(".").split(". ")]
    if len(parts) >= 3:
        return ". ".join(parts[:-2]), parts[-2], parts[-1]
    return parts[0], (parts[1] if len(parts) > 1 else ""), ""


def search_items(ds) -> list[Item]:
    """The dataset's items with title, brand and category fields (for the lexical index)."""
    out = []
    for it in ds.items:
        title, cats, brand = split_text(it.description or it.title)
        out.append(Item(id=it.id, title=(title or it.id)[:500], brand=brand[:200],
                        category=[c[:100] for c in cats.split(" & ")][:8] if cats else [], created_at=0.0))
    return out


def type_words(title: str, n: int = 3) -> list[str]:
    words = [w for w in re.split(r"[\s,/()]+", title)
             if _ALPHA.match(w) and w.lower() not in STOPWORDS and w.lower() not in _UNITS]
    return words[-n:]


def _title_set(title: str) -> frozenset[str]:
    return frozenset(w.lower() for w in re.findall(r"[A-Za-z0-9]+", title) if len(w) > 1)


@dataclass
class Query:
    text: str
    relevant: frozenset[int]
    target: int
    user: str | None = None
    history: tuple[int, ...] = ()


def known_item_queries(items: list[Item], n_valid: int = 400, n_test: int = 1500, seed: int = 0,
                       jaccard: float = 0.5) -> tuple[list[Query], list[Query]]:
    rng = np.random.default_rng(seed)
    sets = [_title_set(it.title) for it in items]
    by_brand: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_brand.setdefault(it.brand.lower(), []).append(i)
    order = rng.permutation(len(items))
    queries = []
    for n, i in enumerate(order):
        words = type_words(items[i].title)
        if len(words) < 2:
            continue
        text = " ".join(words).lower()
        if n % 2 == 0 and items[i].brand:
            text = f"{items[i].brand} {text}"
        near = {j for j in range(len(items))
                if j == i or (sets[i] and len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= jaccard)}
        queries.append(Query(text, frozenset(near), int(i)))
        if len(queries) >= n_valid + n_test:
            break
    return queries[:n_valid], queries[n_valid:]


def _typo(word: str, rng) -> str:
    k, j = int(rng.integers(3)), int(rng.integers(1, len(word) - 1))
    if k == 0:
        return word[:j] + word[j + 1:]  # a letter dropped
    if k == 1:
        return word[:j] + word[j + 1] + word[j] + word[j + 2:]  # two letters swapped
    return word[:j] + "aeiou"[int(rng.integers(5))] + word[j + 1:]  # one replaced


def noisy_queries(queries: list[Query], seed: int = 1) -> list[Query]:
    """Each query with one typo in one word of >= 5 letters (queries without one stay exact)."""
    rng = np.random.default_rng(seed)
    out = []
    for q in queries:
        words = q.text.split()
        long = [n for n, w in enumerate(words) if len(w) >= 5]
        if long:
            n = long[int(rng.integers(len(long)))]
            words[n] = _typo(words[n], rng)
        out.append(Query(" ".join(words), q.relevant, q.target, q.user, q.history))
    return out


def user_queries(ds, items: list[Item], split: str, limit: int, seed: int = 0) -> list[Query]:
    sp = ds.split(split)
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(sp))[: limit]
    out = []
    for r in rows:
        t = int(sp.targets[r])
        words = type_words(items[t].title)
        if len(words) < 2 or not sp.histories[r]:
            continue
        out.append(Query(" ".join(words).lower(), frozenset({t}), t, sp.users[r], tuple(sp.histories[r])))
    return out


def ndcg_recall(ranked: list[int], relevant: frozenset[int], k: int = 10) -> tuple[float, float]:
    gains = [1.0 / np.log2(r + 2) for r, i in enumerate(ranked[:k]) if i in relevant]
    ideal = sum(1.0 / np.log2(r + 2) for r in range(min(k, len(relevant))))
    hit = len(set(ranked[:k]) & relevant)
    return (sum(gains) / ideal if ideal else 0.0), hit / min(k, len(relevant))


def _score(search, queries: list[Query], qvecs: np.ndarray, pos: dict[str, int], profiles=None, **kw) -> dict:
    nd, rc = [], []
    for n, q in enumerate(queries):
        prof = profiles[n] if profiles is not None else None
        hits = search(q.text, qvecs[n], 10, profile=prof, now=1e9, **kw)
        a, b = ndcg_recall([pos[h.item_id] for h in hits], q.relevant)
        nd.append(a)
        rc.append(b)
    return {"ndcg@10": round(float(np.mean(nd)), 4), "recall@10": round(float(np.mean(rc)), 4), "n": len(queries)}


def _profiles(queries: list[Query], ids: list[str], X: np.ndarray):
    from ecrec.profiles.events import Event
    from ecrec.profiles.profile import ProfileConfig, UserProfile

    cfg = ProfileConfig(max_future_skew_s=1e12)
    out = []
    for q in queries:
        p = UserProfile(q.user, X.shape[1])
        for n, i in enumerate(q.history):
            p = p.apply(Event(user_id=q.user, type="click", item_id=ids[i], ts=1e9 - 60 * (len(q.history) - n)),
                        X[i], None, cfg)
        out.append(p)
    return out


FUSION_PAIRS = ((1, 1), (1, 0.5), (0.5, 1), (1, 0.3), (1, 0.2), (1, 0.1))  # (w_lexical, w_semantic) tried


def run_search_eval(data_dir, analyzer, cache_dir=None, n_users: int = 1500, n_valid: int = 400,
                    n_test: int = 1500, pairs=FUSION_PAIRS, rrf_cs=(10.0, 60.0)) -> dict:
    """Every figure of the search section of docs/EVALUATION.md (the defaults are its protocol; a
    test passes fewer queries and a smaller fusion grid)."""
    import dataclasses
    from pathlib import Path

    from ecrec.text.encoder import encode_cached
    from ecrec.evaluation.data import load_unisrec
    from ecrec.evaluation.harness import item_vectors
    from ecrec.retrieval.index import ItemMeta, VectorIndex
    from ecrec.search.hybrid import HybridSearch, SearchConfig
    from ecrec.search.lexical import LexicalIndex

    ds = load_unisrec(Path(data_dir) / "recsys" / "amazon_scientific")
    items = search_items(ds)
    ids = [it.id for it in items]
    pos = {i: n for n, i in enumerate(ids)}
    X = item_vectors(ds, analyzer.encoder, cache_dir)
    index = VectorIndex(X.shape[1], "Flat")
    index.upsert(ids, X, [ItemMeta(it.top_category, 0.0, 1) for it in items])
    hs = HybridSearch(LexicalIndex(items), index, {it.id: it for it in items})
    valid, test = known_item_queries(items, n_valid=n_valid, n_test=n_test)
    nvalid, ntest = noisy_queries(valid), noisy_queries(test)
    uvalid = user_queries(ds, items, "valid", n_users // 2)
    utest = user_queries(ds, items, "test", n_users)
    qv = {name: encode_cached(analyzer.encoder, [q.text for q in qs], "query", cache_dir)
          for name, qs in (("valid", valid), ("test", test), ("nvalid", nvalid), ("ntest", ntest),
                           ("uvalid", uvalid), ("utest", utest))}
    grid = ([SearchConfig(fusion="rrf", w_lexical=a, w_semantic=b, rrf_c=c) for c in rrf_cs for a, b in pairs]
            + [SearchConfig(fusion="blend", w_lexical=a, w_semantic=b) for a, b in pairs])
    tuned = []
    for cfg in grid:
        hs.config = cfg
        exact = _score(hs.search, valid, qv["valid"], pos)["ndcg@10"]
        noisy = _score(hs.search, nvalid, qv["nvalid"], pos)["ndcg@10"]
        tuned.append((round((exact + noisy) / 2, 4), exact, noisy, cfg))
    best = max(tuned, key=lambda t: t[0])[3]
    hs.config = best
    modes = ("lexical", "semantic", "hybrid")
    out = {"items": len(items), "queries": {"valid": len(valid), "test": len(test)},
           "fusion": {"chosen_on_valid": dataclasses.asdict(best), "chosen_by": "mean NDCG@10 of exact and noisy valid",
                      "grid_valid_ndcg": [[c.fusion, c.w_lexical, c.w_semantic, c.rrf_c, m, e, n]
                                          for m, e, n, c in tuned]},
           "known_item_valid": {m: _score(hs.search, valid, qv["valid"], pos, mode=m) for m in modes},
           "known_item_test": {m: _score(hs.search, test, qv["test"], pos, mode=m) for m in modes},
           "noisy_valid": {m: _score(hs.search, nvalid, qv["nvalid"], pos, mode=m) for m in modes},
           "noisy_test": {m: _score(hs.search, ntest, qv["ntest"], pos, mode=m) for m in modes},
           "noisy_examples": [q.text for q in ntest[:8]]}
    out["mixed_test"] = {m: {k: round((out["known_item_test"][m][k] + out["noisy_test"][m][k]) / 2, 4)
                             for k in ("ndcg@10", "recall@10")} for m in modes}
    pv, pt = _profiles(uvalid, ids, X), _profiles(utest, ids, X)
    weights = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    per_w = []
    for w in weights:
        hs.config = dataclasses.replace(best, w_personal=w)
        per_w.append((_score(hs.search, uvalid, qv["uvalid"], pos, profiles=pv)["ndcg@10"], w))
    w_best = max(per_w, key=lambda t: (t[0], -t[1]))[1]
    hs.config = dataclasses.replace(best, w_personal=w_best)
    out["personalized"] = {
        "users": {"valid": len(uvalid), "test": len(utest)}, "w_personal_chosen_on_valid": w_best,
        "valid_ndcg_by_weight": [[w, s] for s, w in per_w],
        "test": {"hybrid": _score(hs.search, utest, qv["utest"], pos),
                 "hybrid_personalized": _score(hs.search, utest, qv["utest"], pos, profiles=pt),
                 "lexical_personalized": _score(hs.search, utest, qv["utest"], pos, profiles=pt, mode="lexical"),
                 "semantic_personalized": _score(hs.search, utest, qv["utest"], pos, profiles=pt, mode="semantic")}}
    return out
