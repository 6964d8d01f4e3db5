"""The commit protocol: shard files, markers, manifest last, resume, refusal of foreign runs, pieces, duplicates."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchlabel.config import InputSpec
from batchlabel.errors import OutputError
from batchlabel.io.datasink import write_table
from batchlabel.io.duplicates import find_duplicate
from batchlabel.io.sink import ShardCommit, ShardSink, merge_pieces, read_committed, read_manifest
from batchlabel.io.source import plan_input
from batchlabel.io.storage import StorageSettings

STORAGE = StorageSettings()


def _labeled(keys_rows, shard_rows=None, ids=None):
    """Labeled rows as the actor returns them; ``shard_rows`` = what each shard's read task reported."""
    rows = [(k, r) for k, rs in keys_rows for r in rs]
    counts = shard_rows or {k: len(rs) for k, rs in keys_rows}
    return pa.table({"id": ids or [f"x{r}" for _, r in rows], "label": ["a"] * len(rows),
                     "error": pa.nulls(len(rows), pa.string()), "labeler_fingerprint": ["f1"] * len(rows),
                     "tokens_output": [2] * len(rows), "_shard": [k for k, _ in rows], "_row": [r for _, r in rows],
                     "_shard_rows": [counts[k] for k, _ in rows]})


@pytest.fixture
def plan(tmp_path):
    pq.write_table(pa.table({"id": [f"x{i}" for i in range(10)], "text": ["t"] * 10}), tmp_path / "in.parquet")
    return plan_input(InputSpec(path=str(tmp_path / "in.parquet")), STORAGE, shard_rows=4)


def _sink(out, plan, info):
    return ShardSink(out, STORAGE, [s.key for s in plan.shards], info)


def test_commit_resume_and_manifest(tmp_path, plan):
    out = str(tmp_path / "out")
    info = {"spec_hash": "s1", "plan": plan.fingerprint(), "labels": ["a"]}
    assert [s.key for s in plan.shards] == ["00000-00000", "00000-00001", "00000-00002"]
    sink = _sink(out, plan, info)
    assert sink.open(restart=False) == set()
    # a write task holds all rows of two shards (out of order) and part of the third
    done = write_table(out, STORAGE, _labeled([("00000-00000", [3, 0, 1]), ("00000-00001", [5, 4]), ("00000-00002", [9])],
                                               shard_rows={"00000-00000": 3, "00000-00001": 2, "00000-00002": 2}))
    assert [d.get("marker", {}).get("key") for d in done] == ["00000-00000", "00000-00001", None]
    assert done[2]["piece"] == "00000-00002"
    assert done[0]["marker"]["tokens"] == {"tokens_output": 6} and done[0]["marker"]["fingerprints"] == ["f1"]
    assert merge_pieces(out, STORAGE, "00000-00002") is None  # one of its two rows so far: not committed
    for d in done[:2]:
        sink.record(ShardCommit(**d["marker"]))
    with pytest.raises(OutputError, match="not completed"):
        sink.finish()
    assert read_manifest(out, STORAGE) is None  # nothing visible before the manifest
    # a "crash" here: the next run resumes with two committed shards; parked pieces are dropped
    again = _sink(out, plan, info)
    assert again.open(restart=False) == {"00000-00000", "00000-00001"}
    write_table(out, STORAGE, _labeled([("00000-00002", [9])], shard_rows={"00000-00002": 2}))
    write_table(out, STORAGE, _labeled([("00000-00002", [8, 9])], shard_rows={"00000-00002": 2})[:1])
    marker = merge_pieces(out, STORAGE, "00000-00002")
    assert marker.rows == 2 and not (tmp_path / "out" / "_batchlabel" / "pieces" / "00000-00002").exists()
    again.record(marker)
    manifest = again.finish()
    assert manifest["rows"] == 7 and len(manifest["shards"]) == 3 and manifest["tokens"] == {"tokens_output": 14}
    table = read_committed(out, STORAGE)
    assert sorted(table.column("id").to_pylist()) == sorted(f"x{i}" for i in [0, 1, 3, 4, 5, 8, 9])
    assert "_shard_rows" not in table.column_names
    # rows inside a shard are in input order
    assert pq.read_table(f"{out}/part-00000-00001.parquet").column("id").to_pylist() == ["x4", "x5"]
    assert find_duplicate(out, STORAGE, [s.key for s in plan.shards], 7) is None


def test_incomplete_or_duplicated_shards_are_never_committed(tmp_path, plan):
    out = str(tmp_path / "o")
    _sink(out, plan, {"spec_hash": "s", "plan": plan.fingerprint()}).open(False)
    done = write_table(out, STORAGE, _labeled([("00000-00000", [0, 1, 1, 3])], shard_rows={"00000-00000": 4}))
    assert "piece" in done[0]  # 4 rows but a row twice: parked, not committed
    assert merge_pieces(out, STORAGE, "00000-00000") is None
    done = write_table(out, STORAGE, _labeled([("00000-00002", [8])], shard_rows={"00000-00002": 2}))
    assert "piece" in done[0] and not (tmp_path / "o" / "part-00000-00002.parquet").exists()


def test_empty_shards_and_foreign_runs(tmp_path, plan):
    out = str(tmp_path / "out")
    sink = _sink(out, plan, {"spec_hash": "s1", "plan": plan.fingerprint()})
    sink.open(False)
    sink.commit_empty("00000-00001")
    assert json.loads((tmp_path / "out" / "_batchlabel" / "shards" / "00000-00001.json").read_text())["file"] is None
    assert _sink(out, plan, {"spec_hash": "s1", "plan": plan.fingerprint()}).open(False) == {"00000-00001"}
    with pytest.raises(OutputError, match="different job spec.*--restart"):
        _sink(out, plan, {"spec_hash": "s2", "plan": plan.fingerprint()}).open(False)
    assert _sink(out, plan, {"spec_hash": "s2", "plan": plan.fingerprint()}).open(True) == set()


def test_duplicate_ids_are_found_across_shards_with_both_places(tmp_path, plan):
    out = str(tmp_path / "out")
    _sink(out, plan, {"spec_hash": "s", "plan": plan.fingerprint()}).open(False)
    write_table(out, STORAGE, _labeled([("00000-00000", [0, 1, 2, 3])], ids=["a", "b", "c", "d"]))
    write_table(out, STORAGE, _labeled([("00000-00001", [4, 5, 6, 7])], ids=["e", "f", "c", "g"]))
    assert find_duplicate(out, STORAGE, ["00000-00000", "00000-00001"], 8) == ("c", ("00000-00000", 2), ("00000-00001", 6))
