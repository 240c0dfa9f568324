"""The catalog board's log (issue 12, defect 7): durable counters, epochs, compaction, artifacts."""
import json

import numpy as np

from ecrec.retrieval.catalog_log import CatalogLog


def _item(i, title="t"):
    return json.dumps({"id": f"x{i}", "title": title})


def test_counters_and_covisits_survive_a_restart(tmp_path):
    path = str(tmp_path / "catalog.db")
    log = CatalogLog(path)
    log.note([("a", 1.5, True, ("a", ["b"])), ("a", 0.5, False, None), ("b", -2.0, False, None)], ["a", "c", "c"])
    log.note([("c", 1.0, True, ("c", ["a", "b"]))], [])
    epoch, _, stats, (pos, pairs) = log.sync(0, -1, 0)
    assert stats == (2, {"a": 2.0, "c": 1.0}, {"a": 1, "c": 2}, {"a": 1, "c": 1})
    assert pairs == [("a", ["b"]), ("c", ["a", "b"])] and pos == 2
    again = CatalogLog(path)  # the board actor restarted on the same database
    e2, _, stats2, (pos2, pairs2) = again.sync(0, -1, 0, epoch)
    assert e2 == epoch and stats2 == stats and pairs2 == pairs and pos2 == pos
    assert again.sync(0, 2, pos, epoch)[2] is None  # a replica up to date gets no counters


def test_an_empty_database_is_a_new_epoch(tmp_path):
    a = CatalogLog(str(tmp_path / "a.db"))
    for i in range(3):
        a.put(_item(i), np.ones(4))
    epoch, rows, _, _ = a.sync(0, -1)
    replica_seq = rows[-1][0]
    b = CatalogLog(str(tmp_path / "b.db"))  # came back with its database gone
    b.put(_item(9), np.ones(4))
    e2, rows2, _, _ = b.sync(replica_seq, 0, 0, epoch)
    assert e2 != epoch  # the replica learns it must start over ...
    assert [r[1] for r in rows2] == ["x9"]  # ... and gets the whole new log, though seq 1 < its 3


def test_compaction_keeps_the_newest_change_per_item(tmp_path):
    log = CatalogLog(str(tmp_path / "c.db"), compact_every=1000, max_covisits=5)
    for rev in range(4):
        for i in range(3):
            log.put(_item(i, f"rev{rev}"), np.full(4, rev, np.float32))
    log.delete("x1")
    for n in range(12):
        log.note([("a", 1.0, True, ("a", [f"r{n}"]))], [])
    full = {r[1]: r[2] for r in log.sync(0, -1)[1]}
    last = log.last_seq()
    assert log.compact() == 13 - 3 + 12 - 5  # superseded changes, co-visits past the newest 5
    rows = log.sync(0, -1)[1]
    assert {r[1]: r[2] for r in rows} == full and len(rows) == 3
    assert log.last_seq() == last  # seq never goes back
    assert json.loads(rows[0][2])["title"] == "rev3" and rows[-1][1:3] == ("x1", None)
    _, _, _, (pos, pairs) = log.sync(0, -1, 0)
    assert [p[1][0] for p in pairs] == [f"r{n}" for n in range(7, 12)] and pos == 12
    assert log.put(_item(7), np.ones(4)) == last + 1


def test_the_log_records_the_artifact_it_serves(tmp_path):
    path = str(tmp_path / "d.db")
    log = CatalogLog(path)
    log.sync(0, -1, 0, None, "artifact-1")
    assert log.info()["artifact_id"] == "artifact-1"
    log.sync(0, -1, 0, None, "artifact-2")
    assert CatalogLog(path).info()["artifact_id"] == "artifact-2"
