"""Retrain's policy (the core half; the Ray driver behind `ecrec retrain` is the shell half): labelled
data out of the event store, how candidates are scored, and the promotion rule.

Reviews that carry a star rating are labelled sentiment data (1-2 negative, 3 neutral, 4-5
positive, as in the MARC protocol). The store keeps each user's recent log (older events are
compacted into snapshots), so the export is the recent reviews of every user still present;
erased users are gone from it. A candidate model is promoted only if it is not worse than the
serving one on a fixed holdout (``should_promote``).

For the sequence retriever the labelled data are the shoppers' own click sequences: each profile's
``recent`` list (the items a shopper clicked, carted or bought, oldest first, as the retriever reads
it when it serves), written as RecBole atomic files so ``ecrec train-sequence`` reads them too, and
split leave-last-out: each shopper's last item is the fixed holdout both models are scored on.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ecrec.learning.datasets import SENTIMENT_LABELS, stars_to_label
from ecrec.profiles.shard import decode_payload


def labelled_reviews(stores: Iterable, since: float = 0.0) -> Iterator[dict]:
    """``{"text", "label", "rating", "ts", "user_id"}`` for every review or feedback with a rating
    and a text in the stores' logs, stamped at or after ``since``."""
    for store in stores:
        for user_id in store.users():
            _, events = store.load_user(user_id)
            for _, payload in events:
                head, _ = decode_payload(payload)
                e = head.get("e") if head.get("k") == "event" else None
                if (e and e["type"] in ("review", "feedback") and e.get("rating") and e.get("text")
                        and e["ts"] >= since):
                    yield {"text": e["text"], "label": SENTIMENT_LABELS[stars_to_label(e["rating"])],
                           "rating": e["rating"], "ts": e["ts"], "user_id": user_id}


def should_promote(candidate: dict, serving: dict, metrics: tuple[str, ...] = ("macro_f1", "accuracy"),
                   tolerance: float = 0.0) -> tuple[bool, str]:
    """Promote when the candidate is not worse than the serving model on every metric of every
    holdout set (by more than ``tolerance``). ``candidate`` and ``serving`` map set -> metric ->
    value. Returns (promote?, why)."""
    worse = []
    for name, served in serving.items():
        if name not in candidate:
            return False, f"the candidate was not evaluated on {name!r}"
        for m in metrics:
            if candidate[name][m] < served[m] - tolerance:
                worse.append(f"{name} {m} {candidate[name][m]:.4f} < {served[m]:.4f}")
    if worse:
        return False, "worse than the serving model: " + "; ".join(worse)
    return True, "not worse on " + ", ".join(f"{n} ({', '.join(metrics)})" for n in serving)


def click_sequences(stores: Iterable, catalog: set[str], dim: int = 384, min_len: int = 3) -> Iterator[tuple[str, list[str]]]:
    """``(user_id, items)`` for every user in the stores: the profile's recent positive items, oldest
    first, as the serving retriever reads them, keeping only items in ``catalog``; users with fewer
    than ``min_len`` (leave-last-out needs a train, a valid and a test item) are left out."""
    from ecrec.profiles.shard import ProfileShard

    for store in stores:
        # only to read: ``peek`` caches nothing and writes nothing; not serving, so it takes no epoch
        # (taking one would fence the live shard beside it)
        shard = ProfileShard(store, dim, serving=False)
        for user_id in store.users():
            profile = shard.peek(user_id)
            items = [i for i in (profile.recent if profile else []) if i in catalog]
            if len(items) >= min_len:
                yield user_id, items


def write_recbole(out: str | Path, items: list, sequences: Iterable[tuple[str, list[str]]],
                  name: str = "live") -> tuple[Path, int]:
    """RecBole atomic files ``<out>/<name>.item`` (every catalog item, in index order) and
    ``<name>.inter`` (a row per click; its position in the sequence is its timestamp). Returns the
    folder and the number of users written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def clean(text: str) -> str:
        return " ".join(str(text).split())  # one line, no tabs

    def checked(key: str, kind: str) -> str:
        if not key or clean(key) != key or " " in key:
            raise ValueError(f"{kind} id {key!r} holds whitespace: RecBole's tab-separated files cannot carry it")
        return key

    with open(out / f"{name}.item", "w", encoding="utf-8") as f:
        f.write("item_id:token\ttitle:token_seq\tcategory:token_seq\n")
        for it in items:
            f.write(f"{checked(it.id, 'item')}\t{clean(it.title)}\t{clean(' '.join(it.category))}\n")
    users = 0
    with open(out / f"{name}.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user_id, seq in sequences:
            checked(user_id, "user")
            users += 1
            for t, item in enumerate(seq):
                f.write(f"{user_id}\t{item}\t{t}\n")
    return out, users


def sequence_holdout(model, X: np.ndarray, item_ids: list[str], split, k: int = 10) -> dict:
    """NDCG@k and Recall@k of ``model`` on ``split`` (each row's history, then its one target):
    the retriever alone ranks the whole catalog as it scores items when serving, the history's own
    items excluded. Metric names keep k=10 (the catalog may hold fewer items)."""
    from ecrec.evaluation.metrics import ranking_report
    from ecrec.retrieval.sequence import catalog_scores
    from ecrec.learning.sequence_training import exclude_history, top_k

    k = min(k, len(item_ids))
    tops = []
    for s in range(0, len(split), 256):  # a users x items block at a time: memory stays bounded at 1M items
        h = split.histories[s : s + 256]
        tops.append(top_k(exclude_history(catalog_scores(model, X, item_ids, h), h), k))
    r = ranking_report(np.concatenate(tops), split.targets, ks=(k,))
    return {"ndcg10": r[f"N@{k}"], "recall10": r[f"R@{k}"], "n": len(split)}


def sequence_version(choice) -> str:
    """How the served sequence retriever shows in the model version: "" for the shipped one (the
    version then reads as before), "none" when it is off, else the file's stem."""
    if choice is None:
        return ""
    return "none" if str(choice) == "none" else Path(choice).stem


def start_from(serving: Path | None, branch_layers: int, labels: list[str],
               from_scratch: bool = False) -> tuple[str | None, str]:
    """(the branch a sentiment/intent candidate starts from, or None; why, for decision.json). A
    retrain continues the serving head when it is a branch with the task's labels and the layers the
    config trains: it then needs fewer examples to be as good on everything the head already knows,
    and learns the new ones on top. The path is absolute: Ray Train workers run in directories of
    their own."""
    from ecrec.text.classifier import branch_meta

    scratch = "from the trunk's own layers"
    if from_scratch:
        return None, f"{scratch} (--from-scratch)"
    if serving is None or not Path(serving).exists():
        return None, f"{scratch} (no serving head)"
    meta = branch_meta(serving)
    if "branch_layers" not in meta:  # the linear probe (.npz), or a file that is not one of our branches
        return None, f"{scratch} (the serving head {Path(serving).name} is not a fine-tuned branch)"
    if meta["branch_layers"] != branch_layers:
        return None, f"{scratch} (the serving head has K={meta['branch_layers']}, the config trains K={branch_layers})"
    if list(meta.get("labels", [])) != list(labels):
        return None, f"{scratch} (the serving head's labels are not the task's)"
    return str(Path(serving).resolve()), f"from the serving head {Path(serving).name}"
