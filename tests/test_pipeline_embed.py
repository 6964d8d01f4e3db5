"""The embed method end to end on a local Ray: exactly-once output, rerun, resume, restart."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchlabel.config import parse_job
from batchlabel.errors import OutputError
from batchlabel.io.sink import read_committed
from batchlabel.io.storage import StorageSettings
from batchlabel.run.actor import output_schema
from batchlabel.run.pipeline import evaluate_output, run_job

from conftest import R8_LABELS, embed_job

pytestmark = pytest.mark.slow
STORAGE = StorageSettings()


def _ids(path) -> list[str]:
    return pq.read_table(path).column("id").to_pylist()


def test_run_labels_every_row_exactly_once(ray_cluster, r8_small, trained_head, tmp_path):
    spec = parse_job(embed_job(r8_small, str(tmp_path / "out"), trained_head))
    result = run_job(spec, progress=False)
    table = read_committed(str(tmp_path / "out"), STORAGE)
    input_ids = _ids(r8_small["test"])
    assert sorted(table.column("id").to_pylist()) == sorted(input_ids)
    assert len(set(table.column("id").to_pylist())) == len(input_ids)
    assert table.schema.names == output_schema(spec).names
    assert table.schema.names[:3] == ["id", "label", "confidence"]
    assert table.column("error").null_count == table.num_rows
    assert set(table.column("label").to_pylist()) <= set(R8_LABELS)
    assert len(set(table.column("labeler_fingerprint").to_pylist())) == 1
    probs = [table.column(f"prob_{l}").to_pylist() for l in R8_LABELS]
    assert all(abs(sum(p) - 1.0) < 1e-4 for p in zip(*probs))
    metrics = result.report["metrics"]
    assert metrics["rows"] == len(input_ids)
    assert metrics["accuracy"] >= 0.8 and metrics["macro_f1"] >= 0.75
    assert (tmp_path / "out" / "confusion_matrix.png").exists()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["metrics"]["accuracy"] == metrics["accuracy"]


def test_run_without_writing_the_report(ray_cluster, r8_small, trained_head, tmp_path):
    """write_report=False: the report dict is computed, no report file is written (the caller writes it once)."""
    out = tmp_path / "out"
    result = run_job(parse_job(embed_job(r8_small, str(out), trained_head)), progress=False, write_report=False)
    assert result.report_files == [] and result.report["metrics"]["rows"] == result.report["rows"]
    assert not any((out / name).exists() for name in ("report.json", "report.md", "report.html", "confusion_matrix.png"))
    assert (out / "_manifest.json").exists()


def test_pipeline_matches_in_process_labeler(ray_cluster, r8_small, trained_head, tmp_path):
    from batchlabel.methods import build_labeler, labeler_fingerprint

    spec = parse_job(embed_job(r8_small, str(tmp_path / "out"), trained_head))
    run_job(spec, progress=False)
    table = read_committed(str(tmp_path / "out"), STORAGE).sort_by("id")
    source = pq.read_table(r8_small["test"]).sort_by("id")
    labeler = build_labeler(spec)
    direct = labeler.label(source.column("text").to_pylist())
    assert table.column("label").to_pylist() == direct.labels
    assert table.column("labeler_fingerprint")[0].as_py() == labeler.fingerprint == labeler_fingerprint(spec, STORAGE)


def test_rerun_adds_nothing_and_resume_redoes_only_missing_shards(ray_cluster, r8_small, trained_head, tmp_path):
    out = tmp_path / "out"
    spec = parse_job(embed_job(r8_small, str(out), trained_head))
    first = run_job(spec, progress=False)
    files_before = sorted(p.name for p in out.iterdir())
    labels_before = read_committed(str(out), STORAGE).sort_by("id")
    again = run_job(spec, progress=False)
    assert again.rows_labeled_this_run == 0 and again.skipped_shards == first.manifest["planned_shards"]
    assert sorted(p.name for p in out.iterdir()) == files_before
    # simulate a crash that lost one committed shard and the manifest
    (out / "_manifest.json").unlink()
    (out / "_batchlabel" / "shards" / "00000-00001.json").unlink()
    resumed = run_job(spec, progress=False)
    assert resumed.rows_labeled_this_run == 40
    after = read_committed(str(out), STORAGE).sort_by("id")
    assert after.column("id").to_pylist() == labels_before.column("id").to_pylist()
    assert after.column("label").to_pylist() == labels_before.column("label").to_pylist()


def test_changed_spec_is_refused_without_restart(ray_cluster, r8_small, trained_head, tmp_path):
    out = str(tmp_path / "out")
    run_job(parse_job(embed_job(r8_small, out, trained_head)), progress=False)
    raw = embed_job(r8_small, out, trained_head)
    raw["output"]["shard_rows"] = 7
    changed = parse_job(raw)
    with pytest.raises(OutputError, match="different job spec"):
        run_job(changed, progress=False)
    result = run_job(changed, restart=True, progress=False)
    shards = -(-pq.read_metadata(r8_small["test"]).num_rows // 7)
    assert result.manifest["planned_shards"] == shards
    assert len(list(Path(out).glob("part-*.parquet"))) == shards  # the old 40-row shards are gone


def test_row_errors_do_not_fail_the_job(ray_cluster, r8_small, trained_head, tmp_path):
    import pyarrow as pa

    rows = pq.read_table(r8_small["test"]).slice(0, 6).to_pylist()
    rows[1]["text"] = None
    rows[2]["text"] = "   \n\t "
    rows[3]["text"] = ""
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    spec = parse_job(embed_job(r8_small, str(tmp_path / "out"), trained_head, input={"path": str(path)}))
    result = run_job(spec, progress=False)
    table = read_committed(str(tmp_path / "out"), STORAGE).sort_by("id")
    by_id = dict(zip(table.column("id").to_pylist(), table.column("error").to_pylist()))
    assert by_id[rows[1]["id"]] == "null text" and by_id[rows[2]["id"]] == "empty text" and by_id[rows[3]["id"]] == "empty text"
    assert sum(e is None for e in by_id.values()) == 3
    assert result.report["error_rows"] == 3 and result.report["metrics"]["rows"] == 6
    report, _ = evaluate_output(str(tmp_path / "out"), STORAGE)
    assert report["metrics"] == result.report["metrics"]


def test_one_actor_per_core_fills_the_node_without_hanging(ray_cluster, r8_small, trained_head, tmp_path):
    """2 actors on the 2-CPU test Ray: the read (+ re-blocking) step must still get a CPU. Before the read
    and re-blocking steps were fused this hung until the stall timeout."""
    from batchlabel.methods import build_labeler

    job = embed_job(r8_small, str(tmp_path / "out"), trained_head,
                    runtime={"actors": 2, "batch_size": 8, "stall_timeout_s": 120})
    spec = parse_job(job)
    run_job(spec, progress=False)
    table = read_committed(str(tmp_path / "out"), STORAGE).sort_by("id")
    source = pq.read_table(r8_small["test"]).sort_by("id")
    assert table.column("id").to_pylist() == source.column("id").to_pylist()  # every row once
    assert table.column("label").to_pylist() == build_labeler(spec).label(source.column("text").to_pylist()).labels
