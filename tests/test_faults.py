"""Fault injection with real processes: dying actors, transient and permanent labeler faults."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchlabel.config import parse_job
from batchlabel.io.sink import read_committed
from batchlabel.io.storage import StorageSettings
from batchlabel.run.pipeline import run_job

from conftest import embed_job

pytestmark = pytest.mark.slow
STORAGE = StorageSettings()


def faulty_job(r8_small, out, head, state_dir, **faults) -> dict:
    job = embed_job(r8_small, str(out), head)
    inner = {**job["method"], "head": head}
    job["method"] = {"name": "custom", "labeler": "batchlabel.testing.faults:FaultyLabeler",
                     "options": {"inner": inner, "state_dir": str(state_dir), **faults}}
    return job


def test_dying_actors_lose_and_duplicate_nothing(ray_cluster, r8_small, trained_head, tmp_path):
    clean = run_job(parse_job(embed_job(r8_small, str(tmp_path / "clean"), trained_head)), progress=False)
    spec = parse_job(faulty_job(r8_small, tmp_path / "out", trained_head, tmp_path / "state",
                                die_on_calls=[2, 4, 6], raise_on_calls=[3, 8]))
    result = run_job(spec, progress=False)
    died = sorted(p.name for p in (tmp_path / "state").glob("died-*"))
    raised = sorted(p.name for p in (tmp_path / "state").glob("raised-*"))
    assert died == ["died-000002", "died-000004", "died-000006"]
    assert raised == ["raised-000003", "raised-000008"]
    table = read_committed(str(tmp_path / "out"), STORAGE).sort_by("id")
    reference = read_committed(str(tmp_path / "clean"), STORAGE).sort_by("id")
    ids = table.column("id").to_pylist()
    assert ids == reference.column("id").to_pylist() and len(set(ids)) == len(ids)  # 0 lost, 0 duplicated
    assert table.column("label").to_pylist() == reference.column("label").to_pylist()
    assert table.column("error").null_count == table.num_rows  # transient faults were retried away
    assert result.manifest["rows"] == clean.manifest["rows"]
    assert table.column("labeler_fingerprint").to_pylist() == reference.column("labeler_fingerprint").to_pylist()


def test_poison_row_becomes_one_error_row_not_a_failed_batch(ray_cluster, r8_small, trained_head, tmp_path):
    rows = pq.read_table(r8_small["test"]).slice(0, 16).to_pylist()
    rows[5]["text"] = "POISON " + rows[5]["text"]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    raw = faulty_job(r8_small, tmp_path / "out", trained_head, tmp_path / "state", poison_text="POISON")
    raw["input"]["path"] = str(path)
    raw["runtime"]["max_retries"] = 1
    result = run_job(parse_job(raw), progress=False)
    table = read_committed(str(tmp_path / "out"), STORAGE)
    errors = dict(zip(table.column("id").to_pylist(), table.column("error").to_pylist()))
    assert errors[rows[5]["id"]] == "labeler failed: ValueError: injected permanent fault: poison text"
    assert sum(e is not None for e in errors.values()) == 1
    assert result.report["error_rows"] == 1 and result.report["labeled_rows"] == 15
