"""Sequential-recommendation datasets: the UniSRec split and RecBole atomic files.

Both become a ``SeqDataset``: the catalog (``Item`` per item, in index order) and three lists of
``(user, history, target)`` rows with item *indices*, so every method ranks the same integers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecrec.retrieval.catalog import Item

MAX_HISTORY = 50  # the UniSRec files cap histories at 50; RecBole splits are capped the same way


@dataclass
class Split:
    users: list[str]
    histories: list[list[int]]  # item indices, oldest first
    targets: np.ndarray  # (n,) item index

    def __len__(self) -> int:
        return len(self.users)

    def head(self, n: int | None) -> "Split":
        if n is None or n >= len(self):
            return self
        return Split(self.users[:n], self.histories[:n], self.targets[:n])


@dataclass
class SeqDataset:
    name: str
    items: list[Item]  # position = item index
    train: Split
    valid: Split
    test: Split
    source: str = ""  # the folder it was read from

    @property
    def n_items(self) -> int:
        return len(self.items)

    def split(self, name: str) -> Split:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be train, valid or test, got {name!r}")
        return getattr(self, name)

    def user_slice(self, n_users: int) -> "SeqDataset":
        """The first ``n_users`` users and only the items they touch (re-indexed): a small,
        self-consistent dataset for tests and quick looks."""
        users = list(dict.fromkeys(self.test.users + self.valid.users + self.train.users))[:n_users]
        keep_users = set(users)
        splits = [self.train, self.valid, self.test]
        touched = sorted({i for sp in splits for u, h, t in zip(sp.users, sp.histories, sp.targets)
                          if u in keep_users for i in (*h, int(t))})
        new = {old: n for n, old in enumerate(touched)}

        def cut(sp: Split) -> Split:
            rows = [r for r, u in enumerate(sp.users) if u in keep_users]
            return Split([sp.users[r] for r in rows], [[new[i] for i in sp.histories[r]] for r in rows],
                         np.asarray([new[int(sp.targets[r])] for r in rows], dtype=np.int64))

        return SeqDataset(f"{self.name}-{n_users}u", [self.items[i] for i in touched], *map(cut, splits),
                          source=self.source)

    def train_sequences(self, include_valid: bool = False) -> list[list[int]]:
        """One sequence per user for next-item training: the longest history the split allows
        (the valid rows' history = every train interaction, the valid target never included).
        ``include_valid`` adds each valid target: the final model for the test split, trained
        after its settings were chosen on valid."""
        seqs: dict[str, list[int]] = {}
        rows = [self.train] + ([self.valid] if include_valid else [])
        for u, h, t in ((u, h, t) for sp in rows for u, h, t in zip(sp.users, sp.histories, sp.targets)):
            s = h + [int(t)]
            if len(s) > len(seqs.get(u, [])):
                seqs[u] = s
        return [s[-(MAX_HISTORY + 1):] for s in seqs.values() if len(s) >= 2]


def _typed_rows(path: Path) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """A RecBole atomic file: tab-separated with a ``name:type`` header."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    with path.open(encoding="utf-8") as f:
        header = []
        for h in f.readline().rstrip("\n").split("\t"):
            name, _, kind = h.partition(":")
            header.append((name, kind or "token"))
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return header, rows


def _inter_split(path: Path, index: dict[str, int]) -> Split:
    header, rows = _typed_rows(path)
    names = [n for n, _ in header]
    for need in ("user_id", "item_id_list", "item_id"):
        if need not in names:
            raise ValueError(f"{path}: no {need} column in {names}")
    cu, ch, ct = names.index("user_id"), names.index("item_id_list"), names.index("item_id")
    users, hist, targets = [], [], []
    for n, row in enumerate(rows, 2):
        try:
            h = [index[x] for x in row[ch].split()]
            t = index[row[ct]]
        except KeyError as e:
            raise ValueError(f"{path}:{n}: unknown item {e.args[0]!r}") from None
        users.append(row[cu])
        hist.append(h[-MAX_HISTORY:])
        targets.append(t)
    return Split(users, hist, np.asarray(targets, dtype=np.int64))


def load_unisrec(directory: str | Path) -> SeqDataset:
    """``<name>.{train,valid,test}.inter`` + ``<name>.text`` + ``<name>.item2index``."""
    d = Path(directory)
    texts = sorted(d.glob("*.text"))
    if not texts:
        raise FileNotFoundError(f"no <name>.text in {d}: not a UniSRec dataset folder")
    name = texts[0].name[: -len(".text")]
    item2index = {}
    with (d / f"{name}.item2index").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                asin, i = line.rstrip("\n").split("\t")
                item2index[asin] = int(i)
    _, rows = _typed_rows(d / f"{name}.text")
    text_of = {r[0]: (r[1] if len(r) > 1 else "") for r in rows}
    items: list[Item | None] = [None] * len(item2index)
    for asin, i in item2index.items():
        text = text_of.get(asin, "").strip() or asin
        title = text.split(". ")[0].strip() or asin
        items[i] = Item(id=asin, title=title[:500], description=text[:5000], created_at=0.0)
    if any(it is None for it in items):
        raise ValueError(f"{d}: item2index is not a dense 0..n-1 index")
    # the .inter files hold item indices as strings
    index = {str(i): i for i in range(len(items))}
    splits = [_inter_split(d / f"{name}.{s}.inter", index) for s in ("train", "valid", "test")]
    return SeqDataset(name, items, *splits, source=str(d))


def load_recbole(directory: str | Path) -> SeqDataset:
    """RecBole atomic files ``<name>.inter`` (user, item, rating, timestamp) + ``<name>.item``
    (every ``token``/``token_seq`` field but the id is item text). Leave-last-out by timestamp:
    each user's last interaction is test, the one before valid, the rest train rows."""
    d = Path(directory)
    inters = sorted(d.glob("*.inter"))
    if not inters:
        raise FileNotFoundError(f"no <name>.inter in {d}: not a RecBole dataset folder")
    name = inters[0].name[: -len(".inter")]
    header, rows = _typed_rows(d / f"{name}.item")
    names = [n for n, _ in header]
    if "item_id" not in names:
        raise ValueError(f"{d / (name + '.item')}: no item_id column in {names}")
    text_cols = [i for i, (n, k) in enumerate(header) if n != "item_id" and k in ("token", "token_seq")]
    items, index = [], {}
    for r in rows:
        iid = r[names.index("item_id")]
        parts = [r[i].strip() for i in text_cols if i < len(r) and r[i].strip()]
        text = ". ".join(parts) or iid
        index[iid] = len(items)
        items.append(Item(id=iid, title=(parts[0] if parts else iid)[:500], description=text[:5000],
                          created_at=0.0))
    header, rows = _typed_rows(d / f"{name}.inter")
    names = [n for n, _ in header]
    for need in ("user_id", "item_id", "timestamp"):
        if need not in names:
            raise ValueError(f"{d / (name + '.inter')}: no {need} column in {names}")
    cu, ci, cts = names.index("user_id"), names.index("item_id"), names.index("timestamp")
    by_user: dict[str, list[tuple[float, int, int]]] = {}
    for n, r in enumerate(rows):
        if r[ci] not in index:
            raise ValueError(f"{d / (name + '.inter')}:{n + 2}: item {r[ci]!r} is not in the .item file")
        by_user.setdefault(r[cu], []).append((float(r[cts]), n, index[r[ci]]))  # n: stable ties
    out = {s: ([], [], []) for s in ("train", "valid", "test")}
    for u, events in by_user.items():
        seq = [i for _, _, i in sorted(events)]
        for pos in range(1, len(seq)):
            s = "test" if pos == len(seq) - 1 else "valid" if pos == len(seq) - 2 else "train"
            out[s][0].append(u)
            out[s][1].append(seq[max(0, pos - MAX_HISTORY):pos])
            out[s][2].append(seq[pos])
    splits = [Split(us, hs, np.asarray(ts, dtype=np.int64)) for us, hs, ts in out.values()]
    return SeqDataset(name, items, *splits, source=str(d))


def load_dataset(directory: str | Path, fmt: str = "auto") -> SeqDataset:
    d = Path(directory)
    if fmt == "auto":
        if list(d.glob("*.item2index")):
            fmt = "unisrec"
        elif list(d.glob("*.item")) and list(d.glob("*.inter")):
            fmt = "recbole"
        else:
            raise ValueError(f"{d}: neither a UniSRec folder (.item2index) nor RecBole atomic files (.inter + .item)")
    if fmt == "unisrec":
        return load_unisrec(d)
    if fmt == "recbole":
        return load_recbole(d)
    raise ValueError(f"format must be auto, unisrec or recbole, got {fmt!r}")
