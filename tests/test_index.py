import numpy as np
import pytest

from ecrec.retrieval.index import Filters, ItemMeta, VectorIndex


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((3000, 32)))
    ids = [f"i{j}" for j in range(len(x))]
    meta = [ItemMeta(category=f"c{j % 10}", price=float(j % 100), stock=j % 7) for j in range(len(x))]
    q = _unit(rng.standard_normal((50, 32)))
    return ids, x, meta, q


def _brute(x, ids, q, k, mask=None):
    s = x @ q
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    order = np.argsort(-s, kind="stable")[:k]
    return [ids[j] for j in order if np.isfinite(s[j])]


def test_flat_index_equals_brute_force(data):
    ids, x, meta, q = data
    idx = VectorIndex(32, "Flat")
    idx.upsert(ids, x, meta)
    for qi in q:
        assert [i for i, _ in idx.search(qi, 10)] == _brute(x, ids, qi, 10)


def test_hnsw_recall_at_10(data):
    ids, x, meta, q = data
    idx = VectorIndex(32, "HNSW32", hnsw_ef_search=64)
    idx.upsert(ids, x, meta)
    recall = np.mean([len(set(i for i, _ in idx.search(qi, 10)) & set(_brute(x, ids, qi, 10))) / 10
                      for qi in q])
    print(f"HNSW32 recall@10 = {recall:.3f}")
    assert recall >= 0.9


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_filters_still_return_k(data, factory):
    ids, x, meta, q = data
    idx = VectorIndex(32, factory)
    idx.upsert(ids, x, meta)
    f = Filters(categories=frozenset({"c3"}), min_price=10, max_price=60, in_stock=True,
                exclude=frozenset({"i13"}))
    mask = np.array([m.category == "c3" and 10 <= m.price <= 60 and m.stock > 0 and i != "i13"
                     for i, m in zip(ids, meta)])
    for qi in q[:10]:
        got = [i for i, _ in idx.search(qi, 10, f)]
        assert len(got) == 10
        assert got == _brute(x, ids, qi, 10, mask)
    # a broad filter (most items pass) goes through FAISS with over-fetching
    broad = Filters(in_stock=True)
    mask = np.array([m.stock > 0 for m in meta])
    got = [i for i, _ in idx.search(q[0], 20, broad)]
    assert len(got) == 20 and set(got) <= {i for i, ok in zip(ids, mask) if ok}


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF16,Flat"])
def test_live_add_update_remove_save_load(data, factory, tmp_path):
    ids, x, meta, q = data
    idx = VectorIndex(32, factory)
    idx.train(x)
    idx.upsert(ids[:500], x[:500], meta[:500])
    target = q[0]
    idx.upsert(["new"], target, [ItemMeta("c0", 1.0, 1)])
    assert idx.search(target, 1)[0][0] == "new"
    idx.upsert(["new"], -target, [ItemMeta("c0", 1.0, 1)])  # update moves it away
    assert "new" not in [i for i, _ in idx.search(target, 20)]
    assert len(idx) == 501
    idx.remove(["new"])
    assert "new" not in idx and len(idx) == 500
    assert "new" not in [i for i, _ in idx.search(-target, 500)]
    idx.save(tmp_path / "ix")
    back = VectorIndex.load(tmp_path / "ix")
    assert back.ids == idx.ids
    assert [i for i, _ in back.search(q[1], 10)] == [i for i, _ in idx.search(q[1], 10)] or factory != "Flat"


def test_bad_input(data):
    ids, x, meta, q = data
    idx = VectorIndex(32)
    idx.upsert(ids[:10], x[:10], meta[:10])
    bad = x[:1].copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        idx.upsert(["nan"], bad, [meta[0]])
    with pytest.raises(ValueError, match="NaN"):
        idx.search(bad[0], 5)
    with pytest.raises(ValueError, match="shape"):
        idx.search(np.ones(7, np.float32), 5)
    for k in (0, -3):
        with pytest.raises(ValueError, match="k must"):
            idx.search(q[0], k)
    with pytest.raises(KeyError, match="unknown"):
        idx.remove(["nope"])
    with pytest.raises(ValueError, match="min_price"):
        Filters(min_price=10, max_price=5)
    assert len(idx) == 10 and "nan" not in idx


def test_auto_factory_by_catalog_size():
    from ecrec.retrieval.index import AUTO_FLAT_MAX, choose_factory

    assert choose_factory("auto", 305) == "Flat" and choose_factory("auto", AUTO_FLAT_MAX) == "Flat"
    assert choose_factory("auto", 1_000_000) == "HNSW32"
    assert choose_factory("IVF1024,Flat", 10) == "IVF1024,Flat"  # an explicit choice is kept


def test_shards_rank_themselves_only_while_an_index_copy_is_small():
    """"auto" colocation: one hop for the demo (305 items) and Amazon Scientific (4,385), two hops
    past 128 MiB of extra vectors per shard (43,690 items at dim 384); an explicit choice is kept."""
    from ecrec.retrieval.index import choose_colocation

    assert choose_colocation(None, 305, 384) and choose_colocation(None, 4_385, 384)
    assert choose_colocation(None, 43_690, 384) and not choose_colocation(None, 43_691, 384)
    assert not choose_colocation(None, 1_000_000, 384) and choose_colocation(None, 87_381, 192)
    assert choose_colocation(True, 1_000_000, 384) and not choose_colocation(False, 305, 384)


def test_hnsw_rebuild_runs_off_the_request_path_and_swaps(data):
    """Deleting most of an HNSW index used to rebuild it inside the call that crossed the
    threshold (every replica stalled at once); now a thread rebuilds and swaps, and searches
    meanwhile stay correct. Edits made during the rebuild survive the swap."""
    import threading

    ids, x, meta, q = data
    idx = VectorIndex(32, "HNSW32", hnsw_ef_search=256)
    idx.upsert(ids, x, meta)
    started = threading.Event()
    release = threading.Event()
    real = idx._new_index

    def slow_new_index():  # hold the rebuild until the test has edited and searched meanwhile
        started.set()
        release.wait(10)
        return real()

    idx._new_index = slow_new_index
    gone = ids[:2000]
    idx.remove(gone)  # crosses the tombstone threshold: returns at once, the rebuild runs aside
    assert started.wait(5) and idx._dead == 2000
    idx.upsert(["late"], x[:1], [meta[0]])  # an edit during the rebuild
    idx.remove([ids[2500]])
    live = [i for i in ids[2000:] if i != ids[2500]] + ["late"]
    hits = {i for qi in q[:10] for i, _ in idx.search(qi, 20)}
    assert not hits & set(gone)  # tombstones never come back while the old structure serves
    release.set()
    idx.wait_rebuild(30)
    assert idx._dead <= 1 and idx._index.ntotal - idx._dead == len(live) == len(idx)
    lx = np.stack([idx.vector(i) for i in live])
    recall = np.mean([len({i for i, _ in idx.search(qi, 10)} & set(_brute(lx, live, qi, 10))) / 10 for qi in q])
    assert recall >= 0.95, recall
    assert idx.search(x[0], 2)[0][0] in ("late", ids[0]) and "late" in {i for i, _ in idx.search(x[0], 5)}


def test_hnsw_structure_is_saved_and_loaded_not_rebuilt(data, tmp_path, monkeypatch):
    ids, x, meta, q = data
    idx = VectorIndex(32, "HNSW32")
    idx.upsert(ids, x, meta)
    idx.remove(ids[:10])
    idx.save(tmp_path)
    assert (tmp_path / "faiss.index").exists()
    calls = []
    monkeypatch.setattr(VectorIndex, "upsert", lambda self, *a: calls.append(a))  # loading must not re-add
    back = VectorIndex.load(tmp_path)
    assert not calls and len(back) == len(ids) - 10
    for qi in q[:10]:
        assert back.search(qi, 10) == idx.search(qi, 10)


class _CountingDict(dict):
    """A dict that counts full walks (what a scan of the catalog's metadata does)."""

    walks = 0

    def items(self):
        type(self).walks += 1
        return super().items()

    def __iter__(self):
        type(self).walks += 1
        return super().__iter__()


def test_filters_read_their_categories_not_the_catalog(data):
    """A category filter is served from per-category id sets kept with the index and cached per
    catalog version: a filtered search walks no metadata (before, every search scanned it all)."""
    ids, x, meta, q = data
    idx = VectorIndex(32, "Flat")
    idx.upsert(ids, x, meta)
    f = Filters(categories=frozenset({"c3", "c7"}), max_price=50.0, exclude=frozenset({"i3"}))
    mask = np.array([f.admits(i, m) for i, m in zip(ids, meta)])
    idx.meta = _CountingDict(idx.meta)
    _CountingDict.walks = 0
    for qi in q[:10]:
        assert [i for i, _ in idx.search(qi, 10, f)] == _brute(x, ids, qi, 10, mask)
    assert _CountingDict.walks == 0
    assert idx.allowed(f) == frozenset(i for i, m in zip(ids, meta) if f.admits_meta(m))


def test_cached_filters_follow_catalog_changes(data, tmp_path):
    ids, x, meta, q = data
    idx = VectorIndex(32, "Flat")
    idx.upsert(ids[:500], x[:500], meta[:500])
    f = Filters(categories=frozenset({"c1"}), in_stock=True)
    before = idx.allowed(f)
    assert "i1" in before and "i11" in before
    # i1 moves category, i11 runs out of stock, i21 is removed, i501 is new in c1
    idx.upsert(["i1", "i11", "i501"], x[[1, 11, 501]],
               [ItemMeta("c2", 1.0, 5), ItemMeta("c1", 11.0, 0), ItemMeta("c1", 2.0, 3)])
    idx.remove(["i21"])
    after = idx.allowed(f)
    expect = frozenset(i for i, m in idx.meta.items() if f.admits_meta(m))
    assert after == expect and "i1" not in after and "i11" not in after and "i21" not in after and "i501" in after
    assert [i for i, _ in idx.search(x[501], 1, f)] == ["i501"]
    idx.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix")
    assert loaded.allowed(f) == expect
    assert loaded.allowed(Filters(exclude=frozenset({"i2"}))) is None  # exclusions alone: no scan at all


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_search_many_equals_search_per_row(data, factory):
    ids, x, meta, q = data
    idx = VectorIndex(32, factory, hnsw_ef_search=256)
    idx.upsert(ids, x, meta)
    ks = [10, 30, 5, 1, 60]
    for f in (None, Filters(exclude=frozenset(ids[:400])), Filters(categories=frozenset({"c2"}), in_stock=True),
              Filters(min_price=20.0, exclude=frozenset(ids[::3]))):
        many = idx.search_many(q[:5], ks, f)
        for row, k, got in zip(q[:5], ks, many):
            want = idx.search(row, k, f)
            assert len(got) == k
            if factory == "Flat":
                assert got == want
            else:  # one FAISS call asks for the largest k of the batch: HNSW may only find more
                assert len(set(i for i, _ in got) & set(i for i, _ in want)) >= 0.9 * k
    with pytest.raises(ValueError):
        idx.search_many(q[:2], [10])


def test_exact_filtered_search_equals_a_full_sort_with_ties_and_exclusions():
    """A filtered search served exactly keeps only the best k (+ exclusions) before sorting; it must
    give what sorting every passing item would, ties (duplicate vectors) in catalog order."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((2000, 16)).astype(np.float32)
    x = np.concatenate([base, base[:1000]])  # 1,000 exact duplicates: tied scores
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"i{j}" for j in range(len(x))]
    index = VectorIndex(16, "Flat")
    index.upsert(ids, x, [ItemMeta("b" if j % 10 else "a", 1.0, 1) for j in range(len(x))])  # "a": 300, exact
    for trial in range(20):
        q = x[int(rng.integers(0, len(x)))] + 0.01 * rng.standard_normal(16).astype(np.float32)
        exclude = frozenset(rng.choice(ids[::10], 5, replace=False).tolist())
        k = int(rng.integers(1, 40))
        got = index.search(q, k, Filters(categories=frozenset({"a"}), exclude=exclude))
        passing = [j for j in range(len(x)) if j % 10 == 0 and ids[j] not in exclude]
        s = x[passing] @ q
        want = [ids[passing[t]] for t in np.argsort(-s, kind="stable")[:k]]
        assert [i for i, _ in got] == want, trial
