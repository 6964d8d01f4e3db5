"""The commit protocol: shard files, markers, manifest last, resume, refusal of foreign runs."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchlabel.config import InputSpec
from batchlabel.errors import OutputError
from batchlabel.io.sink import ShardSink, read_committed, read_manifest
from batchlabel.io.source import plan_input
from batchlabel.io.storage import StorageSettings

STORAGE = StorageSettings()


def _labeled(keys_rows):
    rows = [(k, r) for k, rs in keys_rows for r in rs]
    return pa.table({"id": [f"x{r}" for _, r in rows], "label": ["a"] * len(rows),
                     "error": pa.nulls(len(rows), pa.string()), "_shard": [k for k, _ in rows], "_row": [r for _, r in rows]})


@pytest.fixture
def plan(tmp_path):
    pq.write_table(pa.table({"id": [f"x{i}" for i in range(10)], "text": ["t"] * 10}), tmp_path / "in.parquet")
    return plan_input(InputSpec(path=str(tmp_path / "in.parquet")), STORAGE, shard_rows=4)


def test_commit_resume_and_manifest(tmp_path, plan):
    out = str(tmp_path / "out")
    info = {"spec_hash": "s1", "plan": plan.fingerprint(), "labels": ["a"]}
    sink = ShardSink(out, STORAGE, plan, info)
    assert sink.open(restart=False) == set()
    # batches arrive out of order and split across shards
    assert sink.add(_labeled([("00000-00001", [5, 4])])) == []
    assert sink.add(_labeled([("00000-00000", [0, 1, 2, 3]), ("00000-00001", [7, 6])])) == ["00000-00000", "00000-00001"]
    with pytest.raises(OutputError, match="not completed"):
        sink.finish()
    assert read_manifest(out, STORAGE) is None  # nothing visible before the manifest
    # a "crash" here: the next run resumes with two committed shards
    again = ShardSink(out, STORAGE, plan, info)
    assert again.open(restart=False) == {"00000-00000", "00000-00001"}
    again.add(_labeled([("00000-00002", [9, 8])]))
    manifest = again.finish()
    assert manifest["rows"] == 10 and len(manifest["shards"]) == 3
    table = read_committed(out, STORAGE)
    assert sorted(table.column("id").to_pylist()) == sorted(f"x{i}" for i in range(10))
    # rows inside a shard are in input order
    assert pq.read_table(f"{out}/part-00000-00001.parquet").column("id").to_pylist() == ["x4", "x5", "x6", "x7"]


def test_foreign_run_is_refused_unless_restart(tmp_path, plan):
    out = str(tmp_path / "out")
    ShardSink(out, STORAGE, plan, {"spec_hash": "s1", "plan": plan.fingerprint()}).open(False)
    with pytest.raises(OutputError, match="different job spec.*--restart"):
        ShardSink(out, STORAGE, plan, {"spec_hash": "s2", "plan": plan.fingerprint()}).open(False)
    assert ShardSink(out, STORAGE, plan, {"spec_hash": "s2", "plan": plan.fingerprint()}).open(True) == set()


def test_duplicate_or_extra_rows_are_refused(tmp_path, plan):
    sink = ShardSink(str(tmp_path / "o"), STORAGE, plan, {"spec_hash": "s", "plan": plan.fingerprint()})
    sink.open(False)
    with pytest.raises(OutputError, match="duplicate rows"):
        sink.add(_labeled([("00000-00000", [0, 1, 1, 3])]))
    sink2 = ShardSink(str(tmp_path / "p"), STORAGE, plan, {"spec_hash": "s", "plan": plan.fingerprint()})
    sink2.open(False)
    with pytest.raises(OutputError, match="received 3 rows, expected 2"):
        sink2.add(_labeled([("00000-00002", [8, 9, 9])]))
