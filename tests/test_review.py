"""The human-review round trip: export uncertain rows (Label Studio JSON / CSV), import reviewed labels as gold."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchlabel.config import InputSpec
from batchlabel.errors import BatchlabelError
from batchlabel.hashing import text_hash
from batchlabel.io.storage import StorageSettings
from batchlabel.review.export import export_review
from batchlabel.review.ingest import import_review
from batchlabel.review.labelstudio import labeling_config

STORAGE = StorageSettings()
LABELS = ["pos", "neg", "neu"]
# id, label, confidence, error; the gold of each row is GOLD[id]
ROWS = [("r0", "pos", 0.95), ("r1", "neg", 0.40), ("r2", "pos", 0.55), ("r3", "neu", 0.99), ("r4", None, None),
        ("r5", "neg", 0.91), ("r6", "pos", 0.30), ("r7", "neu", 0.97), ("r8", "neg", 0.88), ("r9", "pos", 0.999)]
GOLD = {"r0": "pos", "r1": "pos", "r2": "neu", "r3": "neu", "r4": "neg", "r5": "neg", "r6": "neg", "r7": "neu",
        "r8": "neg", "r9": "pos"}


def _text(row_id: str) -> str:
    return f"article {row_id} <b>&amp; \"quoted\"</b>"


def _output(root, keep_text: bool) -> str:
    """A committed output as the runner writes it (part files + manifest), two shards."""
    out = root / ("with_text" if keep_text else "no_text")
    out.mkdir()
    shards = []
    for index, part in enumerate((ROWS[:5], ROWS[5:])):
        columns = {
            "id": [r[0] for r in part], "label": [r[1] for r in part],
            "confidence": pa.array([r[2] for r in part], pa.float32()),
            "error": [None if r[1] else "empty text" for r in part],
            "labeler_fingerprint": ["fp123"] * len(part),
            "text_hash": [text_hash(_text(r[0])) for r in part], "gold": pa.nulls(len(part), pa.string()),
        }
        if keep_text:
            columns["text"] = [_text(r[0]) for r in part]
        name = f"part-00000-{index:05d}.parquet"
        pq.write_table(pa.table(columns), out / name)
        shards.append({"key": f"00000-{index:05d}", "file": name, "rows": len(part)})
    (out / "_manifest.json").write_text(json.dumps({"job": "t", "labels": LABELS, "shards": shards}))
    return str(out)


def test_label_studio_export_has_the_documented_task_format(tmp_path):
    output = _output(tmp_path, keep_text=True)
    out = str(tmp_path / "tasks.json")
    summary = export_review(output, STORAGE, below=0.9, out=out, sample_above=2, seed=1)
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    low = [t for t in tasks if t["data"]["reason"] == "low_confidence"]
    assert [t["data"]["id"] for t in low] == ["r6", "r1", "r2", "r8"]  # confidence < 0.9, lowest first
    assert summary["error_rows_not_exported"] == 1 and summary["low_confidence"] == 4 and summary["audit"] == 2
    assert summary["exported"] == 6 and summary["texts_from"] == "output"
    first = tasks[0]
    assert first["data"]["text"] == _text("r6")
    assert first["predictions"] == [{
        "model_version": "fp123", "score": pytest.approx(0.30),
        "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["pos"]}}],
    }]
    audit = [t["data"]["id"] for t in tasks if t["data"]["reason"] == "audit"]
    assert len(audit) == 2 and set(audit) <= {"r0", "r3", "r5", "r7", "r9"}
    export_review(output, STORAGE, below=0.9, out=str(tmp_path / "again.json"), sample_above=2, seed=1)
    assert (tmp_path / "again.json").read_text() == (tmp_path / "tasks.json").read_text()  # seeded
    samples = set()
    for seed in range(6):
        export_review(output, STORAGE, below=0.9, out=str(tmp_path / "s.json"), sample_above=2, seed=seed)
        samples.add(tuple(t["data"]["id"] for t in json.loads((tmp_path / "s.json").read_text())[4:]))
    assert len(samples) > 1
    config = labeling_config(LABELS)
    assert '<Choices name="label" toName="text"' in config and '<Text name="text" value="$text"/>' in config
    assert all(f'<Choice value="{label}"/>' in config for label in LABELS)


def test_export_without_texts_reads_the_input_or_says_how(tmp_path):
    output = _output(tmp_path, keep_text=False)
    with pytest.raises(BatchlabelError, match="keep_text"):
        export_review(output, STORAGE, below=0.5, out=str(tmp_path / "x.csv"), fmt="csv")
    texts = {r[0]: _text(r[0]) for r in ROWS}
    texts["r1"] = "edited since labeling"
    pq.write_table(pa.table({"doc": list(texts), "body": list(texts.values())}), tmp_path / "input.parquet")
    spec = InputSpec(path=str(tmp_path / "input.parquet"), id_column="doc", text_column="body")
    summary = export_review(output, STORAGE, below=0.5, out=str(tmp_path / "x.csv"), fmt="csv", input_spec=spec)
    assert summary["texts_from"] == "input" and summary["changed_texts"] == 1 and summary["exported"] == 2
    rows = list(csv.DictReader(io.StringIO((tmp_path / "x.csv").read_text())))
    assert [(r["id"], r["text"], r["predicted_label"], r["reviewed_label"]) for r in rows] == [
        ("r6", _text("r6"), "pos", ""), ("r1", "edited since labeling", "neg", "")]
    assert list(rows[0]) == ["id", "text", "predicted_label", "confidence", "reason", "output", "reviewed_label"]


def _fill_csv(path, extra_rows=()):
    """The reviewer: types the gold label into reviewed_label (one row left blank), adds mistakes."""
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    for row in rows[1:]:
        row["reviewed_label"] = GOLD[row["id"]].upper() + " "  # case and spaces as people type them
    rows += [{**rows[-1], **extra} for extra in extra_rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())
    return rows


def test_csv_round_trip_reports_unknown_labels_and_ids_and_merges(tmp_path):
    output = _output(tmp_path, keep_text=True)
    sheet = tmp_path / "review.csv"
    export_review(output, STORAGE, below=0.9, out=str(sheet), fmt="csv")
    _fill_csv(sheet, extra_rows=[{"id": "r2", "reviewed_label": "sarcasm"}, {"id": "nope", "reviewed_label": "pos"}])
    gold = str(tmp_path / "gold.parquet")
    with pytest.raises(BatchlabelError, match="sarcasm"):
        import_review(str(sheet), gold, STORAGE, strict=True)
    assert not (tmp_path / "gold.parquet").exists()  # strict: nothing written
    summary = import_review(str(sheet), gold, STORAGE)
    assert summary["unknown_labels"] == {"rows": 1, "examples": ["sarcasm"]}
    assert summary["unknown_ids"] == {"rows": 1, "examples": ["nope"]}
    assert summary["unreviewed"] == 1 and summary["imported"] == 3 and summary["ids_checked"]
    assert summary["source_output"] == output and summary["labels"] == LABELS
    table = pq.read_table(gold)
    assert table.column_names == ["id", "text", "gold"]
    assert sorted(zip(*table.to_pydict().values())) == [(i, _text(i), GOLD[i]) for i in ("r1", "r2", "r8")]
    # r1 neg->pos, r2 pos->neu wrong; r8 right
    assert summary["agreement"]["low_confidence"] == {"reviewed": 3, "agreed": 1, "accuracy": pytest.approx(1 / 3)}
    # a second review round merges: the reviewed ids replace their rows
    again = tmp_path / "round2.csv"
    export_review(output, STORAGE, below=0.6, out=str(again), fmt="csv")  # r6, r1, r2
    rows = list(csv.DictReader(io.StringIO(again.read_text())))
    again.write_text("id,text,reviewed_label\n" + "".join(f"{r['id']},{r['text']!r},neu\n" for r in rows))
    merged = import_review(str(again), gold, STORAGE, labels=LABELS)
    assert (merged["added"], merged["replaced"], merged["gold_rows"]) == (1, 2, 4)
    assert dict(zip(*pq.read_table(gold).select(["id", "gold"]).to_pydict().values())) == {
        "r8": "neg", "r6": "neu", "r1": "neu", "r2": "neu"}


def _label_studio_export(tasks: list[dict]) -> list[dict]:
    """What Label Studio exports after review: task ids, annotations (one cancelled, one missing, a change)."""
    exported = []
    for number, task in enumerate(tasks):
        annotations = []
        if number == 0:
            annotations = [{"id": 1, "result": [], "was_cancelled": True}]  # skipped by the reviewer
        elif number == 1:
            annotations = [
                {"id": 2, "updated_at": "2026-12-01T10:00:00Z", "was_cancelled": False,
                 "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["neg"]}}]},
                {"id": 3, "updated_at": "2026-12-01T11:00:00Z", "was_cancelled": False,
                 "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                             "value": {"choices": [GOLD[task["data"]["id"]]]}}]},
            ]
        elif number != 2:
            annotations = [{"id": 10 + number, "was_cancelled": False, "ground_truth": False, "result": [
                {"id": "abc", "from_name": "label", "to_name": "text", "type": "choices",
                 "value": {"choices": [GOLD[task["data"]["id"]]]}}]}]
        exported.append({"id": 100 + number, "data": task["data"], "annotations": annotations,
                         "predictions": task["predictions"], "project": 1})
    return exported


def test_label_studio_round_trip(tmp_path):
    output = _output(tmp_path, keep_text=True)
    export_review(output, STORAGE, below=0.9, out=str(tmp_path / "tasks.json"), sample_above=3, seed=0)
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    exported = _label_studio_export(tasks)
    exported.append({"id": 999, "data": {"id": "ghost", "text": "x"}, "annotations": [
        {"was_cancelled": False, "result": [{"type": "choices", "from_name": "label", "value": {"choices": ["pos"]}}]}]})
    (tmp_path / "export.json").write_text(json.dumps(exported))
    gold = str(tmp_path / "gold.parquet")
    summary = import_review(str(tmp_path / "export.json"), gold, STORAGE)
    assert (summary["tasks"], summary["unreviewed"], summary["disagreements"]) == (8, 2, 1)
    assert summary["unknown_ids"] == {"rows": 1, "examples": ["ghost"]}
    expected = {t["data"]["id"]: GOLD[t["data"]["id"]] for t in tasks[1:2] + tasks[3:]}
    assert dict(zip(*pq.read_table(gold).select(["id", "gold"]).to_pydict().values())) == expected
    audit = summary["agreement"]["audit"]
    assert audit["reviewed"] == 3 and audit["accuracy"] == 1.0  # the confident rows here are all right


def test_review_cli_export_then_import(tmp_path):
    from typer.testing import CliRunner

    from batchlabel.cli import app

    output = _output(tmp_path, keep_text=False)
    runner = CliRunner()
    failed = runner.invoke(app, ["review", "export", output, "--below", "0.9", "--out", str(tmp_path / "t.json")])
    assert failed.exit_code == 2 and "keep_text" in failed.output
    pq.write_table(pa.table({"id": [r[0] for r in ROWS], "text": [_text(r[0]) for r in ROWS]}), tmp_path / "in.parquet")
    done = runner.invoke(app, ["review", "export", output, "--below", "0.9", "--out", str(tmp_path / "t.csv"),
                               "--format", "csv", "--input", str(tmp_path / "in.parquet"), "--sample-above", "1"])
    assert done.exit_code == 0, done.output
    assert "exported 5 rows" in done.output and "texts from the input" in done.output
    _fill_csv(tmp_path / "t.csv", extra_rows=[{"reviewed_label": "Sarcasm"}])
    imported = runner.invoke(app, ["review", "import", str(tmp_path / "t.csv"), "--into", str(tmp_path / "g.parquet"),
                                   "--labels", "pos,neg", "--labels", "neu"])
    assert imported.exit_code == 0, imported.output
    assert "imported 4 reviewed rows" in imported.output and "skipped 1 rows with a label outside" in imported.output
    strict = runner.invoke(app, ["review", "import", str(tmp_path / "t.csv"), "--into", str(tmp_path / "h.parquet"),
                                 "--strict"])
    assert strict.exit_code == 2 and "Sarcasm" in strict.output


@pytest.mark.slow
def test_round_trip_gold_feeds_eval_and_train(ray_cluster, r8_small, trained_head, tmp_path):
    """A real run -> export (texts from the input) -> the reviewer types the true labels -> import (the
    agreement = the first run's accuracy on the reviewed rows) -> the gold Parquet as a job input gives
    metrics in `run` and `eval`, and as train.input the training loader reads every row."""
    from conftest import R8_LABELS, embed_job

    from batchlabel.config import parse_job
    from batchlabel.io.sink import read_committed
    from batchlabel.run.pipeline import evaluate_output, run_job
    from batchlabel.training.data import load_training_data

    out = str(tmp_path / "out")
    run_job(parse_job(embed_job(r8_small, out, trained_head)), progress=False)
    sheet = tmp_path / "review.csv"
    summary = export_review(out, STORAGE, below=0.8, out=str(sheet), fmt="csv", sample_above=10, seed=3,
                            input_spec=InputSpec(path=str(r8_small["test"])))
    assert summary["low_confidence"] > 0 and summary["audit"] == 10 and summary["changed_texts"] == 0
    truth = dict(zip(*pq.read_table(r8_small["test"], columns=["id", "label"]).to_pydict().values()))
    rows = list(csv.DictReader(io.StringIO(sheet.read_text())))
    for row in rows:
        row["reviewed_label"] = truth[row["id"]]
    with sheet.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    gold = str(tmp_path / "gold.parquet")
    imported = import_review(str(sheet), gold, STORAGE)
    assert imported["imported"] == len(rows) == summary["exported"]
    assert imported["unknown_labels"]["rows"] == imported["unknown_ids"]["rows"] == 0
    first = read_committed(out, STORAGE, columns=["id", "label"]).to_pydict()
    predicted = dict(zip(first["id"], first["label"]))
    assert imported["agreement"]["audit"]["accuracy"] == pytest.approx(
        sum(predicted[r["id"]] == truth[r["id"]] for r in rows if r["reason"] == "audit") / 10)
    low = [r for r in rows if r["reason"] == "low_confidence"]
    assert imported["agreement"]["low_confidence"]["accuracy"] == pytest.approx(
        sum(predicted[r["id"]] == truth[r["id"]] for r in low) / len(low))
    # eval: the gold file as a job input with gold_column: gold (labeled by the no-op labeler: every row "earn")
    job = {"name": "gold", "input": {"path": gold, "gold_column": "gold"}, "labels": R8_LABELS,
           "method": {"name": "custom", "labeler": "batchlabel.testing.noop:NoopLabeler"},
           "runtime": {"actors": 1, "batch_size": 16}, "output": {"path": str(tmp_path / "gold_out")}}
    result = run_job(parse_job(job), progress=False)
    earn = sum(truth[r["id"]] == "earn" for r in rows) / len(rows)
    assert result.report["metrics"]["rows"] == len(rows)
    assert result.report["metrics"]["accuracy"] == pytest.approx(earn)
    report, _ = evaluate_output(str(tmp_path / "gold_out"), STORAGE)
    assert report["metrics"]["accuracy"] == pytest.approx(earn) and report["metrics"]["rows"] == len(rows)
    # train: the gold file as train.input
    job = embed_job(r8_small, str(tmp_path / "unused"), trained_head)
    job["train"]["input"] = {"path": gold, "gold_column": "gold"}
    spec = parse_job(job)
    data = load_training_data(spec, spec.train, STORAGE)
    assert len(data.rows) == len(rows) and data.skipped == 0


@pytest.mark.slow
def test_review_round_trip_on_s3(s3_bucket, tmp_path):
    from batchlabel.io.storage import join

    output = join(s3_bucket, "out")
    STORAGE.upload_dir(Path(_output(tmp_path, keep_text=True)), output)
    tasks_url, gold_url = join(s3_bucket, "review", "tasks.json"), join(s3_bucket, "gold", "reviewed.parquet")
    summary = export_review(output, STORAGE, below=0.9, out=tasks_url, sample_above=1)
    tasks = json.loads(STORAGE.read_bytes(tasks_url))
    assert summary["exported"] == len(tasks) == 5 and tasks[0]["data"]["output"] == output
    STORAGE.write_bytes(tasks_url, json.dumps(_label_studio_export(tasks)).encode())
    imported = import_review(tasks_url, gold_url, STORAGE)  # labels and ids from the S3 output recorded in the tasks
    assert imported["ids_checked"] and imported["imported"] == 3 and imported["gold_rows"] == 3
    assert pq.read_table(io.BytesIO(STORAGE.read_bytes(gold_url))).column_names == ["id", "text", "gold"]

