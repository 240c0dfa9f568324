"""Online metrics with attribution: which list, source and position a click or purchase came from.

Every served list gets a request id. The shard that owns the user keeps the list (its items with
their position and source, the A/B arm and the model version) in a bounded ledger; an event that
names the request id is attributed to its item's entry there, once per (list, item, event type).
Counts go into one-minute buckets, so a summary over any window up to the retention is a sum, and
the shards' summaries merge by addition (``merge``); ``report`` turns the sums into rates.

Counts are by source family (``similar:<item id>`` counts as ``similar``), position bucket and arm.
Definitions (the same in Prometheus and in ``/v1/admin/metrics/summary``):
- CTR = attributed clicks / items shown, by source, by position bucket and by arm;
- CVR = attributed purchases / attributed clicks (carts are reported as a count);
- coverage = distinct items shown in the window (its last hour at most) / catalog size;
- cold share = lists served to users without a profile / lists served.
"""
from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from ecrec.profiles.events import CLICK_TYPES

POSITION_BUCKETS = ((1, "1"), (3, "2-3"), (10, "4-10"), (math.inf, "11+"))
ATTRIBUTED_TYPES = CLICK_TYPES  # the events that count as clicks are the ones a list is credited with


def source_family(source: str) -> str:
    """What metrics count by: ``similar:<item id>`` is ``similar`` (one series per item would not
    scale), every other source is itself."""
    return source.split(":", 1)[0]


def position_bucket(position: int) -> str:
    """Positions are 1-based: "1", "2-3", "4-10", "11+"."""
    for upper, name in POSITION_BUCKETS:
        if position <= upper:
            return name
    raise AssertionError("unreachable")


@dataclass
class ServedList:
    user_id: str
    ts: float
    arm: str
    model_version: str
    items: dict[str, tuple[int, str]]  # item id -> (position, source)
    attributed: set = field(default_factory=set)  # (item id, event type) already counted


@dataclass
class Window:
    """Counts of one bucket (or of a merged window): plain counters, summed across shards."""

    lists: Counter = field(default_factory=Counter)  # (arm, cold) -> lists served
    shown: Counter = field(default_factory=Counter)  # (source, bucket, arm) -> items shown
    events: Counter = field(default_factory=Counter)  # (type, source, bucket, arm) -> attributed events
    unattributed: Counter = field(default_factory=Counter)  # type -> events naming an unknown list/item
    sentiment: Counter = field(default_factory=Counter)  # label -> texts
    items: set = field(default_factory=set)  # distinct items shown
    span_s: float = 0.0  # seconds the counts cover (whole buckets: up to one bucket less than asked)

    def add(self, other: "Window") -> "Window":
        for name in ("lists", "shown", "events", "unattributed", "sentiment"):
            getattr(self, name).update(getattr(other, name))
        self.items |= other.items
        self.span_s = max(self.span_s, other.span_s)
        return self


class Attribution:
    """The ledger and the buckets of one shard (not thread-safe: the shard actor is serial)."""

    def __init__(self, max_lists: int = 100_000, retention_s: float = 86_400.0, bucket_s: float = 60.0,
                 coverage_s: float = 3600.0):
        if max_lists < 1 or retention_s <= 0 or bucket_s <= 0 or coverage_s <= 0:
            raise ValueError("max_lists, retention_s, bucket_s and coverage_s must be positive")
        self.max_lists, self.retention_s, self.bucket_s = max_lists, retention_s, bucket_s
        self.coverage_s = coverage_s  # distinct items are kept this long (a day of them would not scale)
        self._lists: OrderedDict[str, ServedList] = OrderedDict()
        self._buckets: dict[int, Window] = {}

    def _bucket(self, ts: float) -> Window:
        b = int(ts // self.bucket_s)
        w = self._buckets.get(b)
        if w is None:
            w = self._buckets[b] = Window()
            oldest = b - int(self.retention_s // self.bucket_s)
            for old in [k for k in self._buckets if k < oldest]:
                del self._buckets[old]
            covered = b - int(self.coverage_s // self.bucket_s)
            for k, old_w in self._buckets.items():
                if k < covered:
                    old_w.items = set()
        return w

    def served(self, request_id: str, user_id: str | None, items: list[tuple[str, str]], ts: float,
               arm: str = "", model_version: str = "", cold: bool = False) -> None:
        """A list was shown: ``items`` are (item id, source) in display order."""
        w = self._bucket(ts)
        w.lists[(arm, bool(cold))] += 1
        entry = {}
        for pos, (item_id, source) in enumerate(items, start=1):
            entry.setdefault(item_id, (pos, source))
            w.shown[(source_family(source), position_bucket(pos), arm)] += 1
            w.items.add(item_id)
        if user_id is not None:
            self._lists.pop(request_id, None)
            self._lists[request_id] = ServedList(user_id, ts, arm, model_version, entry)
            while len(self._lists) > self.max_lists:
                self._lists.popitem(last=False)

    def event(self, request_id: str, user_id: str, item_id: str | None, event_type: str,
              ts: float) -> dict | None:
        """Attribute an event that names the list it came from. Returns where the item was
        (source, position, arm, model version), or None when the list is unknown (expired, another
        user's, never served), the item was not in it, or this was counted before."""
        if event_type not in ATTRIBUTED_TYPES:
            return None
        entry = self._lists.get(request_id)
        w = self._bucket(ts)
        if entry is None or entry.user_id != user_id or item_id not in entry.items:
            w.unattributed[event_type] += 1
            return None
        pos, source = entry.items[item_id]
        out = {"request_id": request_id, "source": source, "position": pos, "arm": entry.arm,
               "model_version": entry.model_version}
        if (item_id, event_type) in entry.attributed:
            return out  # a repeated click on the same item of the same list counts once
        entry.attributed.add((item_id, event_type))
        w.events[(event_type, source_family(source), position_bucket(pos), entry.arm)] += 1
        return out

    def forget(self, user_id: str) -> int:
        """Drop an erased user's lists from the ledger (the counts hold no user ids)."""
        gone = [r for r, entry in self._lists.items() if entry.user_id == user_id]
        for r in gone:
            del self._lists[r]
        return len(gone)

    def text(self, label: str, ts: float) -> None:
        self._bucket(ts).sentiment[label] += 1

    def window(self, window_s: float, now: float) -> Window:
        """The sum of the buckets that start within the last ``window_s`` seconds (the current one
        included); ``span_s`` says how many seconds that is."""
        first = int(math.ceil((now - window_s) / self.bucket_s))
        out = Window(span_s=max(0.0, now - first * self.bucket_s))
        for b, w in self._buckets.items():
            if b >= first:
                out.add(w)
        return out


def merge(windows) -> Window:
    out = Window()
    for w in windows:
        out.add(w)
    return out


def _rate(num: float, den: float) -> float | None:
    return num / den if den else None


def report(w: Window, catalog_size: int, window_s: float) -> dict:
    """Rates and mixes for JSON (``/v1/admin/metrics/summary``)."""
    def by(key_index: int) -> dict:
        shown, ev = Counter(), {t: Counter() for t in ATTRIBUTED_TYPES}
        for key, n in w.shown.items():
            shown[key[key_index]] += n
        for (etype, *key), n in w.events.items():
            ev[etype][key[key_index]] += n
        return {k: {"shown": shown[k], "clicks": ev["click"][k], "carts": ev["cart"][k],
                    "purchases": ev["purchase"][k], "ctr": _rate(ev["click"][k], shown[k]),
                    "cvr": _rate(ev["purchase"][k], ev["click"][k])} for k in sorted(shown)}

    lists = sum(w.lists.values())
    cold = sum(n for (_, c), n in w.lists.items() if c)
    texts = sum(w.sentiment.values())
    shown_total = sum(w.shown.values())
    clicks = sum(n for k, n in w.events.items() if k[0] == "click")
    purchases = sum(n for k, n in w.events.items() if k[0] == "purchase")
    return {
        "window_s": window_s,
        "span_s": w.span_s,
        "lists": lists,
        "items_shown": shown_total,
        "ctr": _rate(clicks, shown_total),
        "cvr": _rate(purchases, clicks),
        "by_source": by(0),
        "by_position": by(1),
        "by_arm": by(2),
        "unattributed_events": dict(w.unattributed),
        "coverage": _rate(len(w.items), catalog_size),
        "distinct_items_shown": len(w.items),
        "cold_start_share": _rate(cold, lists),
        "sentiment_mix": {k: w.sentiment[k] / texts for k in sorted(w.sentiment)} if texts else {},
    }
