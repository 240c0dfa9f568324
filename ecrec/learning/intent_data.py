"""The intent task's data: 27 Bitext service intents + ``none``, English and Chinese, split so that
near-duplicates cannot flatter the model.

- **English** (Bitext, template-generated): utterances are grouped into paraphrase groups by
  k-means on their frozen e5 vectors, per intent (``paraphrase_groups``; the group ids ship in
  ``data/bitext_groups.npz``). Whole groups are held out for the test and the dev split; the
  protocol's random rows are reported too, drawn from the groups that train.
- **Chinese**: the project's own utterances (``data/intents_zh_train.jsonl``, 40 per intent,
  augmented with typos, drops, swaps and register changes) train; a separately written set
  (``data/intents_zh_test.jsonl``, scenario-first, never trained on) tests.
- **none** (out of scope): MARC reviews in both languages and the project's product questions,
  opinions, queries and small talk (``data/none_texts.jsonl``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ecrec.learning.augment import variants
from ecrec.learning.datasets import load_intents, load_marc, stratified_split

DATA = Path(__file__).parents[1] / "data"
ZH_TRAIN = DATA / "intents_zh_train.jsonl"
ZH_TEST = DATA / "intents_zh_test.jsonl"
NONE_TEXTS = DATA / "none_texts.jsonl"
GROUPS = DATA / "bitext_groups.npz"
NONE = "none"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def normalise(text: str) -> str:
    """Lower case, letters and digits only: 'Cancel my order!' and 'cancel my order' are one text."""
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def paraphrase_groups(vectors: np.ndarray, intents: list[str], texts: list[str] | None = None,
                      per_group: int = 20, min_groups: int = 6, seed: int = 0) -> np.ndarray:
    """A group id per row: k-means (FAISS, cosine on normalised vectors) within each intent, about
    ``per_group`` utterances per group and at least ``min_groups`` per intent, so near-duplicates of
    one template share a group; rows whose ``normalise``d texts are equal are then merged into one
    group, so the same utterance can never sit on both sides of a split."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    names = np.asarray(intents)
    groups = np.full(len(names), -1, dtype=np.int32)
    next_id = 0
    for name in sorted(set(intents)):
        idx = np.flatnonzero(names == name)
        k = min(len(idx), max(min_groups, len(idx) // per_group))
        km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, spherical=True, min_points_per_centroid=1,
                          max_points_per_centroid=len(idx))
        km.train(x[idx])
        _, assign = km.index.search(x[idx], 1)
        _, dense = np.unique(assign[:, 0], return_inverse=True)
        groups[idx] = next_id + dense
        next_id += int(dense.max()) + 1
    if texts is not None:  # union of groups that share a normalised text
        parent = {int(g): int(g) for g in np.unique(groups)}

        def find(g):
            while parent[g] != g:
                parent[g] = parent[parent[g]]
                g = parent[g]
            return g

        first: dict[str, int] = {}
        for t, g in zip(texts, groups.tolist()):
            key = normalise(t)
            if key in first:
                a, b = find(first[key]), find(g)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first[key] = g
        groups = np.array([find(int(g)) for g in groups], dtype=np.int32)
    return groups


def save_groups(groups: np.ndarray, source: Path, path: Path = GROUPS) -> Path:
    np.savez_compressed(path, groups=groups.astype(np.int32), sha256=np.array(file_sha256(source)))
    return path


def load_groups(source: Path, path: Path = GROUPS, n_rows: int | None = None) -> np.ndarray:
    """The shipped group ids, checked against the data file they were computed on."""
    with np.load(path, allow_pickle=False) as z:
        groups, sha = z["groups"], str(z["sha256"])
    if sha != file_sha256(source):
        raise ValueError(f"{path} was computed on another {source.name}: run `ecrec intent-groups` again")
    if n_rows is not None and len(groups) != n_rows:
        raise ValueError(f"{path} has {len(groups)} group ids for {n_rows} utterances: run `ecrec intent-groups`")
    return groups


def hold_out_groups(groups: np.ndarray, y: np.ndarray, frac: float, seed: int,
                    among: np.ndarray | None = None) -> np.ndarray:
    """Row indices of whole groups, about ``frac`` of each intent's rows and never more than
    1.25 x ``frac`` unless one group is all there is to take (then the smallest group), drawn from
    the rows ``among`` (default all)."""
    rng = np.random.default_rng(seed)
    among = np.arange(len(y)) if among is None else among
    out = []
    for c in np.unique(y[among]):
        rows = among[y[among] == c]
        ids, counts = np.unique(groups[rows], return_counts=True)
        cap = frac * len(rows) * 1.25
        taken, total = [], 0
        for j in rng.permutation(len(ids)):
            if total + counts[j] > cap:
                continue
            taken.append(ids[j])
            total += counts[j]
            if total >= frac * len(rows):
                break
        if not taken and len(ids) > 1:
            taken = [ids[int(np.argmin(counts))]]
        out.append(rows[np.isin(groups[rows], taken)])
    return np.sort(np.concatenate(out))


def bigrams(text: str) -> frozenset[str]:
    return frozenset(text[i:i + 2] for i in range(len(text) - 1)) or frozenset([text])


class NearTexts:
    """Is a text within ``threshold`` bigram Jaccard of any of ``texts``? (Chinese near-copies.)"""

    def __init__(self, texts: list[str], threshold: float = 0.6):
        self.grams, self.threshold = [bigrams(t) for t in texts], threshold

    def __call__(self, text: str) -> bool:
        g = bigrams(text)
        return any(len(g & h) >= self.threshold * len(g | h) for h in self.grams)


def _stable_frac(text: str) -> float:
    """A fixed pseudo-random number in [0, 1) per text: splits that never move."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) / 2**32


def intent_labels(data_dir) -> list[str]:
    """The intent classes, in the order a branch's outputs use: the Bitext intents sorted, then ``none``."""
    return sorted(set(load_intents(data_dir)[1])) + [NONE]


def intent_splits(data_dir, seed: int = 0, zh_variants: int = 3, none_marc: int = 1500,
                  none_marc_test: int = 500, train_limit: int | None = None) -> dict:
    """{labels, train, dev, tests}: each a (texts, label ids, language) triple of lists/arrays.

    Tests: ``bitext_heldout_groups`` (whole paraphrase groups never trained on),
    ``bitext_random_rows`` (random rows of trained groups: the flattering protocol figure),
    ``zh_test`` (written separately), ``none_marc`` (held-out MARC test reviews),
    ``none_project`` (held-out project texts)."""
    texts, names = load_intents(data_dir)
    labels = intent_labels(data_dir)
    lid = {n: i for i, n in enumerate(labels)}
    y = np.array([lid[n] for n in names])
    groups = load_groups(Path(data_dir) / "intents" / "bitext_20k_utterances.csv", n_rows=len(texts))
    test_g = hold_out_groups(groups, y, 0.2, seed)
    rest = np.setdiff1d(np.arange(len(y)), test_g)
    dev_g = hold_out_groups(groups, y, 0.1, seed + 1, among=rest)
    rest = np.setdiff1d(rest, dev_g)
    keep, rand = stratified_split(y[rest], 0.1, seed)
    train_en, random_rows = rest[keep], rest[rand]
    if train_limit:
        _, sub = stratified_split(y[train_en], min(1.0, train_limit / len(train_en)), seed)
        train_en = train_en[sub]
    out = {"labels": labels, "train": ([], [], []), "dev": ([], [], []), "tests": {}}

    def add(split, ts, ys, lang):
        t, l, g = out[split]
        t.extend(ts)
        l.extend(int(v) for v in ys)
        g.extend([lang] * len(ts))

    def test(name, ts, ys, lang):
        out["tests"][name] = (list(ts), np.asarray(ys, dtype=np.int64), [lang] * len(ts))

    add("train", [texts[i] for i in train_en], y[train_en], "en")
    add("dev", [texts[i] for i in dev_g], y[dev_g], "en")
    test("bitext_heldout_groups", [texts[i] for i in test_g], y[test_g], "en")
    test("bitext_random_rows", [texts[i] for i in random_rows], y[random_rows], "en")
    # Chinese: 85 % of the project's utterances (+ variants) train, 15 % calibrate; the test file tests
    zh = read_jsonl(ZH_TRAIN)
    zt = read_jsonl(ZH_TEST)
    zy = np.array([lid[r["intent"]] for r in zh])
    zkeep, zdev = stratified_split(zy, 0.15, seed)
    near = NearTexts([r["text"] for r in zt])
    for i in zkeep:  # an utterance or variant close to a test utterance never trains
        ts = [t for t in [zh[i]["text"]] + variants(zh[i]["text"], zh_variants, seed) if not near(t)]
        add("train", ts, [zy[i]] * len(ts), "zh")
    add("dev", [zh[i]["text"] for i in zdev], zy[zdev], "zh")
    test("zh_test", [r["text"] for r in zt], [lid[r["intent"]] for r in zt], "zh")
    # none: MARC reviews (train file for training/dev, test file for the test) + project texts
    rng = np.random.default_rng(seed)
    for lang in ("zh", "en"):
        mt, _ = load_marc(data_dir, lang, "train")
        pick = rng.choice(len(mt), none_marc + none_marc // 10, replace=False)
        add("train", [mt[i] for i in pick[:none_marc]], [lid[NONE]] * none_marc, lang)
        add("dev", [mt[i] for i in pick[none_marc:]], [lid[NONE]] * (len(pick) - none_marc), lang)
        mtest, _ = load_marc(data_dir, lang, "test")
        tpick = np.sort(rng.choice(len(mtest), none_marc_test, replace=False))
        test(f"none_marc_{lang}", [mtest[i] for i in tpick], [lid[NONE]] * none_marc_test, lang)
    proj = read_jsonl(NONE_TEXTS)
    held = [r for r in proj if _stable_frac(r["text"]) < 0.2]
    dev = [r for r in proj if 0.2 <= _stable_frac(r["text"]) < 0.3]
    for r in proj:
        f = _stable_frac(r["text"])
        if f >= 0.3:
            vs = [r["text"]] + variants(r["text"], 1, seed)
            add("train", vs, [lid[NONE]] * len(vs), r["lang"])
    add("dev", [r["text"] for r in dev], [lid[NONE]] * len(dev), "mixed")
    test("none_project", [r["text"] for r in held], [lid[NONE]] * len(held), "mixed")
    for split in ("train", "dev"):
        t, l, g = out[split]
        out[split] = (t, np.asarray(l, dtype=np.int64), g)
    return out


def clarify_threshold(confidence: np.ndarray, correct: np.ndarray, target: float = 0.97) -> float:
    """The lowest confidence ``t`` such that predictions at or above ``t`` are right at least
    ``target`` of the time on a dev split: below it, the chat should ask rather than guess.
    Only cut between distinct confidences, so every row at ``t`` is counted as accepted."""
    order = np.argsort(-confidence, kind="stable")
    c, ok = confidence[order], correct[order].astype(np.float64)
    acc = np.cumsum(ok) / np.arange(1, len(ok) + 1)
    cut = np.append(c[:-1] > c[1:], True)  # positions after which the confidence drops
    good = np.flatnonzero((acc >= target) & cut)
    return float(c[good[-1]]) if len(good) else 1.0
