"""method: cascade: the spec's shape (refusals), the threshold rule of each stage (exactly the rows below the
previous stage's min_confidence are relabeled, the others pass through unchanged), the fingerprint chain, and a
real 2-stage run on Ray (embed head -> no-op labeler) with resume and the report's cascade section."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import R8_LABELS

from batchlabel.config import parse_job
from batchlabel.config.cascade import stage_jobs
from batchlabel.errors import SpecError
from batchlabel.io.storage import StorageSettings
from batchlabel.methods import labeler_fingerprint

NOOP = {"name": "custom", "labeler": "batchlabel.testing.noop:NoopLabeler"}


def _job(tmp_path, head: str, below: float | None = 0.6, second: dict | None = None, **extra) -> dict:
    stages = [{"method": {"name": "embed", "head": head, "max_length": 128}, "min_confidence": below},
              {"method": second or {**NOOP, "options": {"record_dir": str(tmp_path / "calls")}}}]
    return {"name": "cascade", "input": {"path": str(tmp_path / "in.parquet"), "gold_column": "label"},
            "labels": R8_LABELS, "method": {"name": "cascade", "stages": stages},
            "runtime": {"actors": 1, "batch_size": 16}, "output": {"path": str(tmp_path / "out"), "shard_rows": 40},
            **extra}


@pytest.mark.parametrize("stages, message", [
    ([{"method": NOOP, "min_confidence": 0.5}, {"method": NOOP, "min_confidence": 0.5}], "remove its min_confidence"),
    ([{"method": NOOP}, {"method": NOOP}], "stages[0] needs min_confidence"),
    ([{"method": NOOP, "min_confidence": 0.5, "threshold": 1}, {"method": NOOP}], "stages.0.threshold: unknown field"),
    ([{"method": {**NOOP, "min_confidence": 0.5}}, {"method": NOOP}], "stages.0.method.custom.min_confidence: unknown"),
    ([{"method": {"name": "cascade", "stages": []}, "min_confidence": 0.5}, {"method": NOOP}], "Input tag 'cascade'"),
    ([{"method": NOOP}], "at least 2 items"),
    ([{"method": NOOP, "min_confidence": 1.5}, {"method": NOOP}], "less than or equal to 1"),
])
def test_cascade_specs_that_mean_nothing_are_refused(stages, message):
    raw = {"input": {"path": "x.parquet"}, "labels": ["a", "b"], "output": {"path": "o"},
           "method": {"name": "cascade", "stages": stages}}
    with pytest.raises(SpecError) as err:
        parse_job(raw)
    assert message in str(err.value)


def test_fingerprint_and_resume_hash_cover_every_stage_and_threshold(tmp_path):
    def job(below, runtime=None, label="b"):
        second = {"method": NOOP} if runtime is None else {"method": NOOP, "runtime": runtime}
        return parse_job({"input": {"path": "x.parquet"}, "labels": ["a", label], "output": {"path": "o"},
                          "method": {"name": "cascade", "stages": [{"method": NOOP, "min_confidence": below}, second]}})

    fingerprint = lambda spec: labeler_fingerprint(spec, StorageSettings())
    base = job(0.5)
    assert fingerprint(base) != fingerprint(job(0.6)) and base.result_hash() != job(0.6).result_hash()
    assert fingerprint(base) != fingerprint(job(0.5, label="c"))  # a stage's own fingerprint changed
    # a stage's resources change only speed: same fingerprint, same resume hash, but its own actor pool size
    fast = job(0.5, runtime={"actors": 3, "batch_size": 7})
    assert fingerprint(base) == fingerprint(fast) and base.result_hash() == fast.result_hash()
    assert [s.runtime.actors for s in stage_jobs(fast)] == [1, 3] and stage_jobs(fast)[1].runtime.batch_size == 7


@pytest.mark.slow
def test_each_stage_relabels_exactly_the_rows_below_the_threshold(r8_small, trained_head, tmp_path):
    """The stage actors called in-process (no Ray): stage 2 sees exactly the rows stage 1 put below 0.6."""
    from batchlabel.run.cascade import StageLabeler

    spec = parse_job(_job(tmp_path, trained_head))
    first, second = [s.model_dump_json() for s in stage_jobs(spec)]
    block = pq.read_table(r8_small["test"]).rename_columns({"label": "gold"}).select(["id", "text", "gold"])
    block = pa.concat_tables([block, pa.table({"id": ["empty"], "text": [" "], "gold": ["earn"]})])
    one = StageLabeler(first, 1, None, False, 0, 2, None, False).label_block(block)
    out = StageLabeler(second, 1, None, False, 1, 2, 0.6, False).label_block(one)
    confidence = one.column("confidence").to_numpy(zero_copy_only=False)
    low = np.array([c is None or np.isnan(c) or c < 0.6 for c in confidence])
    assert 0 < low.sum() < len(low) - 1 and out.column("id").to_pylist() == block.column("id").to_pylist()
    assert out.column("labeled_by").to_pylist() == [2 if x else 1 for x in low]
    calls = [json.loads(p.read_text()) for p in (tmp_path / "calls").glob("*.json")]
    seen = sorted(t for call in calls for t in call["texts"])
    assert seen == sorted(t for t, x in zip(block.column("text").to_pylist(), low) if x and t.strip())
    for name in ["label", "confidence", "prob_earn", "error"]:  # passed through unchanged, or the no-op's label
        before, after = one.column(name).to_pylist(), out.column(name).to_pylist()
        assert [a for a, x in zip(after, low) if not x] == [b for b, x in zip(before, low) if not x]
    assert {lab for lab, x in zip(out.column("label").to_pylist(), low) if x} == {None, "earn"}
    assert out.column("error").to_pylist()[-1] == "empty text"  # errored at stage 1, went on, errored again
    assert len(set(out.column("labeler_fingerprint").to_pylist())) == 1 and "text" not in out.column_names


@pytest.mark.slow
def test_a_two_stage_cascade_on_ray_labels_every_row_once(r8_small, trained_head, ray_cluster, tmp_path):
    from batchlabel.io.sink import read_committed
    from batchlabel.run.pipeline import run_job

    pq.write_table(pq.read_table(r8_small["test"]), tmp_path / "in.parquet")
    spec = parse_job(_job(tmp_path, trained_head, runtime={"actors": 1, "batch_size": 16}))
    result = run_job(spec, progress=False)
    table = read_committed(str(tmp_path / "out"), StorageSettings())
    ids = pq.read_table(tmp_path / "in.parquet").column("id").to_pylist()
    assert sorted(table.column("id").to_pylist()) == sorted(ids) and table.num_rows == len(set(ids))
    by = table.column("labeled_by").to_pylist()
    relabeled = sum(len(json.loads(p.read_text())["texts"]) for p in (tmp_path / "calls").glob("*.json"))
    assert 0 < by.count(2) < len(by) and relabeled == by.count(2)  # stage 2 saw each escalated row once, no other
    assert set(table.column("labeler_fingerprint").to_pylist()) == {labeler_fingerprint(spec, StorageSettings())}
    stages = result.report["cascade"]["stages"]
    assert [s["rows"] for s in stages] == [by.count(1), by.count(2)] and stages[1]["rows_seen"] == by.count(2)
    assert stages[0]["accuracy"] > result.report["metrics"]["accuracy"]  # the no-op stage labels everything 'earn'
    assert "## Cascade" in (tmp_path / "out" / "report.md").read_text()
    again = run_job(spec, progress=False)  # resume: every shard committed, nothing relabeled
    assert again.rows_labeled_this_run == 0 and again.skipped_shards == result.manifest["planned_shards"]
