"""Offline evaluation: metrics, ranking helpers, dataset loaders, methods and the harness, on
hand-made data whose expected numbers are worked out by hand in the comments."""
import json
import math
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ecrec.evaluation import metrics as m
from ecrec.retrieval.covisit import CoVisits
from ecrec.evaluation.data import Split, load_dataset, load_recbole, load_unisrec
from ecrec.evaluation.harness import EvalOptions, format_table, run_eval
from ecrec.evaluation.methods import ItemKNN, Popularity, ZeroShot, recency_weights
from ecrec.profiles.events import Event
from ecrec.profiles.profile import LEGACY_MAGIC, ProfileConfig, UserProfile
from ecrec.learning.sequence_training import exclude_history, mask_history, top_k

HOME = Path("/work/main/.ecrec")


def _g(pos):  # NDCG gain of the single relevant item at 0-based position pos
    return 1 / math.log2(pos + 2)


# ---- 1. metrics -------------------------------------------------------------------------------
@pytest.fixture()
def lists():
    """4 users, lists of 50 distinct items (100..149); targets at positions 0, 3, 12 and absent."""
    top = np.tile(np.arange(100, 150), (4, 1))
    targets = np.array([7, 8, 9, 10])
    top[0, 0], top[1, 3], top[2, 12] = 7, 8, 9
    return top, targets


def test_ranking_report_known_answers(lists):
    top, targets = lists
    assert m.target_positions(top, targets).tolist() == [0, 3, 12, -1]
    r = m.ranking_report(top, targets)
    assert r["R@10"] == pytest.approx(0.5)  # positions 0 and 3
    assert r["R@50"] == pytest.approx(0.75)  # and 12
    assert r["N@10"] == pytest.approx((1 + 1 / math.log2(5)) / 4) == pytest.approx(0.357669, abs=1e-6)
    assert r["N@50"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(14)) / 4)
    assert r["N@50"] == pytest.approx(0.423332, abs=1e-6)
    assert r["MRR"] == pytest.approx((1 + 1 / 4 + 1 / 13) / 4) == pytest.approx(0.331731, abs=1e-6)
    assert set(r) == {"R@10", "N@10", "R@50", "N@50", "MRR"}


def test_ranking_report_agrees_with_per_list_metrics(lists):
    top, targets = lists
    r = m.ranking_report(top, targets, ks=(1, 5, 20))
    for k in (1, 5, 20):
        assert r[f"R@{k}"] == pytest.approx(np.mean([m.recall_at_k(list(t), {g}, k) for t, g in zip(top, targets)]))
        assert r[f"N@{k}"] == pytest.approx(np.mean([m.ndcg_at_k(list(t), {g}, k) for t, g in zip(top, targets)]))
    assert r["MRR"] == pytest.approx(np.mean([m.mrr(list(t), {g}) for t, g in zip(top, targets)]))


def test_recall_curve(lists):
    top, targets = lists
    curve = m.recall_curve(top, targets)
    assert curve.tolist() == pytest.approx([0.25] * 3 + [0.5] * 9 + [0.75] * 38)


def test_ranking_report_errors(lists):
    top, targets = lists
    with pytest.raises(ValueError, match="fewer than k=10"):
        m.ranking_report(top[:, :5], targets, ks=(10,))
    with pytest.raises(ValueError, match="non-empty"):
        m.ranking_report(np.zeros((0, 50), int), np.zeros(0, int))
    with pytest.raises(ValueError, match="same length"):
        m.ranking_report(top, targets[:3])
    with pytest.raises(ValueError, match="positive integer"):
        m.ranking_report(top, targets, ks=(0,))


# ---- 2. ranking helpers -------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 7, 30, 40])
def test_top_k_matches_full_argsort(k):
    scores = np.random.default_rng(k).integers(0, 6, size=(25, 30)).astype(np.float64)  # many ties
    reference = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # stable: lower index first
    got = top_k(scores, k)
    assert got.shape == (25, min(k, 30))
    np.testing.assert_array_equal(got, reference)


def test_top_k_ties_at_the_cut_keep_the_lower_index():
    # argpartition alone returned item 3 here: any of the tied 2s could survive the cut
    assert top_k(np.array([[1.0, 1.0, 2.0, 2.0]]), 1).tolist() == [[2]]
    x = -np.inf
    assert top_k(np.array([[x, 0.5, x, x, 0.5, 0.9]]), 4).tolist() == [[5, 1, 4, 0]]


def test_exclude_history():
    s = exclude_history(np.arange(8, dtype=np.float64).reshape(2, 4), [[0, 2, 2], []])
    assert s.tolist() == [[-np.inf, 1.0, -np.inf, 3.0], [4.0, 5.0, 6.0, 7.0]]


def test_mask_history():
    # row 0: sequence 1 2 3 1 (the last target repeats item 1); row 1: 4 2, zero-padded
    inputs = torch.tensor([[1, 2, 3], [4, 0, 0]])
    live = torch.tensor([[True, True, True], [True, False, False]])
    target = torch.tensor([2, 3, 1, 2])  # one per live step, row-major
    logits = torch.arange(1.0, 21.0).reshape(4, 5)
    out = mask_history(logits, inputs, live, target)
    x = float("-inf")
    expected = torch.tensor([[1.0, x, 3, 4, 5],  # read {1}; item 3 comes later: untouched
                             [6, x, x, 9, 10],  # read {1, 2}
                             [11, 12, x, x, 15],  # read {1, 2, 3}; target 1 keeps its logit
                             [16, 17, 18, 19, x]])  # read {4}; padding 0s are not history
    assert torch.equal(out, expected)
    assert logits[0, 1] == 2.0  # input not mutated


# ---- 3. datasets ------------------------------------------------------------------------------
ASINS = ["B0MOUSE", "B0KEYBD", "B0USBHUB", "B0STAND", "B0GRIND", "B0PRESS", "B0CUPS"]
TITLES = ["Wireless Mouse", "Mechanical Keyboard", "USB-C Hub", "Aluminium Laptop Stand",
          "Burr Coffee Grinder", "French Press Coffee Maker", "Espresso Cups Set"]
# each shopper's items in time order (indices into ASINS); u2 re-buys the grinder last
SEQS = {"u1": [0, 1, 2, 6], "u2": [4, 5, 6, 4], "u3": [0, 2, 3], "u4": [5, 4, 6], "u5": [1, 0, 3, 2]}
TRAIN = [("u1", [0], 1), ("u2", [4], 5), ("u5", [1], 0)]
VALID = [("u1", [0, 1], 2), ("u2", [4, 5], 6), ("u3", [0], 2), ("u4", [5], 4), ("u5", [1, 0], 3)]
TEST = [("u1", [0, 1, 2], 6), ("u2", [4, 5, 6], 4), ("u3", [0, 2], 3), ("u4", [5, 4], 6), ("u5", [1, 0, 3], 2)]


def _write(path: Path, header: str, rows) -> None:
    path.write_text(header + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")


def write_unisrec(d: Path) -> Path:
    d.mkdir()
    (d / "Tiny.item2index").write_text("".join(f"{a}\t{i}\n" for i, a in enumerate(ASINS)))
    _write(d / "Tiny.text", "item_id:token\ttext:token_seq",
           [(a, f"{t}. A fine {t.lower()} for home and office") for a, t in zip(ASINS, TITLES)])
    for name, rows in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        _write(d / f"Tiny.{name}.inter", "user_id:token\titem_id_list:token_seq\titem_id:token",
               [(u, " ".join(map(str, h)), t) for u, h, t in rows])
    return d


def write_recbole(d: Path) -> Path:
    d.mkdir()
    cats = ["Electronics Computers"] * 4 + ["Home Kitchen Coffee"] * 3
    _write(d / "Tiny.item", "item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token",
           [(a, t, c, "Acme") for a, t, c in zip(ASINS, TITLES, cats)])
    rows = [(u, ASINS[i], 5.0, 1000 * int(u[1]) + 10 * p) for u, seq in SEQS.items() for p, i in enumerate(seq)]
    random.Random(3).shuffle(rows)
    assert [r[3] for r in rows] != sorted(r[3] for r in rows)  # deliberately not in time order
    _write(d / "Tiny.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float", rows)
    return d


@pytest.fixture()
def unisrec_dir(tmp_path):
    return write_unisrec(tmp_path / "unisrec")


@pytest.fixture()
def recbole_dir(tmp_path):
    return write_recbole(tmp_path / "recbole")


def _rows(split: Split):
    return sorted((u, h, int(t)) for u, h, t in zip(split.users, split.histories, split.targets))


@pytest.mark.parametrize("fmt", ["unisrec", "recbole"])
def test_loaders_give_the_leave_last_out_split(fmt, unisrec_dir, recbole_dir):
    ds = load_unisrec(unisrec_dir) if fmt == "unisrec" else load_recbole(recbole_dir)
    assert ds.name == "Tiny" and ds.n_items == 7
    assert [it.id for it in ds.items] == ASINS and [it.title for it in ds.items] == TITLES
    assert (_rows(ds.train), _rows(ds.valid), _rows(ds.test)) == (TRAIN, VALID, TEST)
    assert ds.test.targets.dtype == np.int64
    assert sorted(ds.train_sequences()) == [[0, 1], [1, 0], [4, 5]]  # users with a train row
    assert len(ds.split("valid").head(2)) == 2 and ds.test.head(None) is ds.test
    with pytest.raises(ValueError, match="train, valid or test"):
        ds.split("dev")


def test_load_dataset_detects_the_format(unisrec_dir, recbole_dir, tmp_path):
    uni, rb = load_dataset(unisrec_dir), load_dataset(recbole_dir)
    assert uni.items[4].description == "Burr Coffee Grinder. A fine burr coffee grinder for home and office"
    assert rb.items[4].description == "Burr Coffee Grinder. Home Kitchen Coffee. Acme"  # title. categories. brand
    assert uni.source == str(unisrec_dir) and rb.source == str(recbole_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a UniSRec folder"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="format must be"):
        load_dataset(recbole_dir, fmt="csv")


def test_loader_errors(unisrec_dir, recbole_dir):
    inter = recbole_dir / "Tiny.inter"
    inter.write_text(inter.read_text() + "u9\tB0NOPE\t3.0\t5\n")
    with pytest.raises(ValueError, match="'B0NOPE' is not in the .item file"):
        load_recbole(recbole_dir)
    inter.write_text("user_id:token\titem_id:token\trating:float\nu1\tB0MOUSE\t5\n")
    with pytest.raises(ValueError, match="no timestamp column"):
        load_recbole(recbole_dir)
    test = unisrec_dir / "Tiny.test.inter"
    test.write_text(test.read_text() + "u9\t0 1\t7\n")  # item index 7 is beyond the catalog
    with pytest.raises(ValueError, match="unknown item '7'"):
        load_unisrec(unisrec_dir)
    test.write_text("user_id:token\titem_id:token\nu1\t3\n")
    with pytest.raises(ValueError, match="no item_id_list column"):
        load_unisrec(unisrec_dir)


# ---- 4. methods and the harness ---------------------------------------------------------------
# Test-split histories: u1 {0,1,2}, u2 {4,5,6}, u3 {0,2}, u4 {5,4}, u5 {1,0,3}.
# Popularity counts [3,2,2,1,2,2,1] -> order 0,1,2,4,5,3,6; each user's history removed.
POP_LISTS = [[4, 5, 3, 6], [0, 1, 2, 3], [1, 4, 5, 3, 6], [0, 1, 2, 3, 6], [2, 4, 5, 6]]
POP_POS = [3, -1, 3, 4, 0]  # u2's target (the grinder again) is in its history: never listed
# ItemKNN, shrink 10: sim01 = sim02 = 2/(sqrt6+10), sim03 = 1/(sqrt3+10), sim12 = 1/12,
# sim13 = 1/(sqrt2+10), sim23 = 0, sim46 = sim56 = 1/(sqrt2+10); no tech-coffee pairs.
# u1: 3 = .49 sim03 + .7 sim13 = .103 > 0 for 4,5,6.  u3: 1 = .7 sim01 + sim12 = .196 > 3 = .7 sim03.
# u4: 6 = .7 sim56 + sim46 = .149 > 0.  u5: 2 = .49 sim12 + .7 sim02 = .153 > 0.
KNN_LISTS = [[3, 4, 5, 6], [0, 1, 2, 3], [1, 3, 4, 5, 6], [6, 0, 1, 2, 3], [2, 4, 5, 6]]
KNN_POS = [3, -1, 1, 0, 0]


def _expected(pos):
    """R@K, N@K (K = 10 and 50 agree: lists hold at most 7 items) and MRR from target positions."""
    hit = [p for p in pos if p >= 0]
    r, n, rr = len(hit) / len(pos), sum(_g(p) for p in hit) / len(pos), sum(1 / (p + 1) for p in hit) / len(pos)
    return {"R@10": r, "N@10": n, "R@50": r, "N@50": n, "MRR": rr}


def _padded(rows):
    return [r + [-1] * (50 - len(r)) for r in rows]


def test_methods_rank_small_catalog_with_padding(unisrec_dir):
    """A catalog smaller than the list length: lists are padded with -1 and excluded history
    items are not listed (this used to raise: a (n, 7) top-k written into an (n, 50) array)."""
    ds = load_unisrec(unisrec_dir)
    assert Popularity(ds, ds.test).rank(ds.test, 50).tolist() == _padded(POP_LISTS)
    assert ItemKNN(ds, ds.test, decay=0.7).rank(ds.test, 50).tolist() == _padded(KNN_LISTS)
    assert _expected(POP_POS)["MRR"] == pytest.approx((1 / 4 + 1 / 4 + 1 / 5 + 1) / 5)  # 0.34
    assert _expected(KNN_POS)["MRR"] == pytest.approx((1 / 4 + 1 / 2 + 1 + 1) / 5)  # 0.55


def test_zeroshot_and_recency_weights():
    assert recency_weights(3, 0.5).tolist() == [0.25, 0.5, 1.0]
    X = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    zs = ZeroShot(X, decay=0.5)
    # query = 0.5 x0 + x1 = (0.5, 1): scores 0.5, 1.0, 1.1, 1.0
    assert zs.scores([[0, 1]])[0].tolist() == pytest.approx([0.5, 1.0, 1.1, 1.0])
    split = Split(["a"], [[0, 1]], np.array([3]))
    assert zs.rank(split, 4).tolist() == [[2, 3, -1, -1]]


@pytest.mark.parametrize("fmt", ["unisrec", "recbole"])
def test_run_eval_on_tiny_data(fmt, unisrec_dir, recbole_dir, tmp_path, analyzer):
    out = tmp_path / "r.json"
    opts = EvalOptions(data=unisrec_dir if fmt == "unisrec" else recbole_dir, split="test",
                       methods=("popularity", "itemknn", "zeroshot"), out=out, progress=False, home=HOME)
    result = run_eval(opts, analyzer=analyzer)
    saved = json.loads(out.read_text())
    assert {k: saved[k] for k in ("dataset", "split", "users", "items")} == \
        {"dataset": "Tiny", "split": "test", "users": 5, "items": 7}
    assert list(saved["methods"]) == ["popularity", "itemknn", "zeroshot"]
    for name, got in saved["methods"].items():
        assert set(got) == {"R@10", "N@10", "R@50", "N@50", "MRR", "coverage@10", "ild@10", "seconds"}
        assert got["R@10"] == got["R@50"] == pytest.approx(0.8)  # all but u2, whose target is excluded
        assert got["coverage@10"] == pytest.approx(1.0)  # every item is in some user's list
        assert 0.0 < got["ild@10"] < 2.0 and got["seconds"] >= 0
        assert len(saved["curves"][name]) == 50
    for name, pos in (("popularity", POP_POS), ("itemknn", KNN_POS)):
        for key, want in _expected(pos).items():
            assert saved["methods"][name][key] == pytest.approx(want, abs=1e-9), (name, key)
    assert saved["methods"]["popularity"]["N@10"] == pytest.approx(0.449641, abs=1e-6)
    assert saved["methods"]["itemknn"]["N@10"] == pytest.approx(0.612321, abs=1e-6)
    assert saved["curves"]["popularity"][:6] == pytest.approx([0.2, 0.2, 0.2, 0.6, 0.8, 0.8])
    assert saved["curves"]["itemknn"][:4] == pytest.approx([0.4, 0.6, 0.6, 0.8])
    assert result["methods"]["itemknn"]["MRR"] == saved["methods"]["itemknn"]["MRR"]
    png = out.with_suffix(".png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    table = format_table(result)
    assert table.startswith("Tiny test: 5 users, 7 items")
    assert all(name in table for name in ("popularity", "itemknn", "zeroshot"))


def test_eval_trains_a_missing_sequence_model_without_ray(unisrec_dir, tmp_path):
    """`ecrec eval` on a machine without Ray trains a missing sequence model in its own process.
    It used to pick Ray Train because ``training.sequence`` imports without Ray, then fail inside it
    on ``import ray.train``; in process, the valid NDCG@10 then refused a catalog under 10 items.
    Here ``ray`` cannot be imported, as on such a machine."""
    import subprocess
    import sys

    ckpt = tmp_path / "seq" / "sequence.safetensors"
    script = f"""
import sys
sys.modules["ray"] = None  # import ray: ImportError, as where Ray is not installed
from ecrec.cli import main
main(["--home", {str(HOME)!r}, "eval", "--data", {str(unisrec_dir)!r}, "--methods", "sequence",
      "--checkpoint", {str(ckpt)!r}, "--time-cap", "30", "--no-progress"])
assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules if sys.modules[m] is not None)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Tiny test: 5 users, 7 items" in r.stdout and "sequence" in r.stdout, r.stdout
    from ecrec.retrieval.sequence import load_sequence_model

    model, meta = load_sequence_model(ckpt)
    assert meta["dataset"] == "Tiny" and meta["items"] == 7 and meta["vocab"] == ASINS
    assert meta["best_epoch"] >= 0 and not (ckpt.parent / "ray").exists()  # trained here, not by Ray Train


def test_eval_trains_with_ray_train_where_ray_is_installed():
    import argparse

    from training import cli, sequence

    sub = (parser := argparse.ArgumentParser()).add_subparsers(dest="cmd")
    sub.add_parser("eval")
    cli.register(sub)
    assert parser.parse_args(["eval"]).sequence_trainer is sequence.fit


def test_run_eval_rejects_unknown_method(unisrec_dir):
    with pytest.raises(ValueError, match="unknown methods"):
        run_eval(EvalOptions(data=unisrec_dir, methods=("random",), progress=False))


# ---- 5. co-visitation ---------------------------------------------------------------------------
def test_covisits_counts_and_scores():
    cv = CoVisits()
    # shopper A buys a, b, c; shopper B buys a, c; shopper C buys b, c
    cv.merge([("a", []), ("b", ["a"]), ("c", ["a", "b"]), ("a", []), ("c", ["a"]), ("b", []), ("c", ["b"])])
    assert cv.counts == {"a": 2, "b": 2, "c": 3}
    assert cv.pairs == {"a": {"b": 1, "c": 2}, "b": {"a": 1, "c": 2}, "c": {"a": 2, "b": 2}}
    # recent [a, b]: b at age 0 (weight 1), a at age 1 (weight 0.5); shrink 1
    s = cv.scores(["a", "b"], decay=0.5, shrink=1.0)
    assert s["a"] == pytest.approx(1 / (math.sqrt(2 * 2) + 1))  # from b
    assert s["b"] == pytest.approx(0.5 * 1 / (math.sqrt(2 * 2) + 1))  # from a
    assert s["c"] == pytest.approx(2 / (math.sqrt(6) + 1) + 0.5 * 2 / (math.sqrt(6) + 1))
    assert cv.scores(["a", "b"], decay=0.5, shrink=1.0, last=1) == pytest.approx(
        {"a": 1 / 3, "c": 2 / (math.sqrt(6) + 1)})
    assert cv.scores(["zzz"]) == {}


def test_covisits_never_pair_an_item_with_itself():
    cv = CoVisits(window=2)
    cv.add("x", ["z", "x", "x", "y"])  # window keeps [x, y]; x itself is skipped, duplicates once
    assert cv.pairs == {"x": {"y": 1}, "y": {"x": 1}} and cv.counts == {"x": 1}


# ---- 6. UserProfile.recent -----------------------------------------------------------------------
E = np.eye(8, dtype=np.float32)


def _drive(p, events, cfg=ProfileConfig()):
    for t, (kind, item, v) in enumerate(events):
        p = p.apply(Event(user_id="u", type=kind, item_id=item, ts=float(t)), item_vector=E[v], config=cfg)
    return p


def test_profile_recent_sequence():
    p = _drive(UserProfile("u", 8), [("purchase", "a", 0), ("purchase", "b", 1), ("view", "c", 2)])
    assert p.recent == ["a", "b"]  # views don't add
    p = _drive(p, [("purchase", "a", 0), ("click", "d", 3)])
    assert p.recent == ["b", "a", "d"]  # a repeat moves to the end
    p = _drive(p, [("dislike", "b", 1)])
    assert p.recent == ["a", "d"]
    cfg = ProfileConfig(max_sequence=3)
    q = _drive(UserProfile("u", 8), [("purchase", f"i{j}", j) for j in range(5)], cfg)
    assert q.recent == ["i2", "i3", "i4"]


def test_profile_recent_serialisation():
    from tests.legacy_profiles import v2_bytes

    p = _drive(UserProfile("u", 8), [("purchase", "a", 0), ("cart", "b", 1)])
    data = p.to_bytes()
    assert UserProfile.from_bytes(data).recent == ["a", "b"]
    blob = v2_bytes(p, scaled=False)
    (n,) = struct.unpack_from("<I", blob, 4)
    head = json.loads(blob[8 : 8 + n])
    del head["rs"]  # a blob written before the field existed (format ECP1: unscaled rows)
    hb = json.dumps(head).encode()
    old = UserProfile.from_bytes(LEGACY_MAGIC + struct.pack("<I", len(hb)) + hb + blob[8 + n :])
    assert old.recent == [] and old.purchased == p.purchased
