"""Nightly incremental reclassification: date partitions, exactly which rows are re-labeled, drift, schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from batchlabel.cli import app
from batchlabel.config.nightly import PipelineSpec, load_pipeline
from batchlabel.errors import BatchlabelError, SpecError
from batchlabel.io.sink import read_committed
from batchlabel.io.storage import StorageSettings
from batchlabel.nightly.drift import build_drift, total_variation
from batchlabel.nightly.night import EXIT_REGRESSION, run_night
from batchlabel.nightly.partitions import check_date, current_labels
from batchlabel.nightly.schedule import crontab_entry, merge_crontab

from conftest import embed_job

REPO = Path(__file__).resolve().parents[1]


def _write_pipeline(tmp: Path, r8_small, head: str, corpus: Path, gold: Path, **extra) -> Path:
    job = embed_job(r8_small, str(tmp / "unused"), head)
    job["method"]["head"] = head
    job["input"] = {"path": str(corpus), "gold_column": "label"}
    pipeline = {
        "name": "nightly-test",
        "job": job,
        "output": str(tmp / "nightly"),
        "gold": {"path": str(gold), "gold_column": "label"},
        "drift": {"max_accuracy_drop": 0.05, "max_macro_f1_drop": 0.1, "max_label_shift": 0.25},
        **extra,
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def corpora(r8_small, tmp_path_factory):
    """Night 1: 80 real R8 test articles. Night 2: 3 edited, 2 removed, 4 new. Gold: the other 35 test rows."""
    root = tmp_path_factory.mktemp("corpora")
    test = pq.read_table(r8_small["test"])
    night1 = test.slice(0, 80)
    gold = test.slice(80, 40)
    texts = night1.column("text").to_pylist()
    ids = night1.column("id").to_pylist()
    changed, removed = [ids[3], ids[10], ids[42]], [ids[5], ids[6]]
    texts = [t + " the company said in a statement" if i in changed else t for i, t in zip(ids, texts)]
    night2 = pa.table({"id": ids, "text": texts, "label": night1.column("label")})
    night2 = night2.filter(pc.invert(pc.is_in(night2.column("id"), pa.array(removed))))
    train = pq.read_table(r8_small["train"]).slice(0, 4)
    new = pa.table({"id": [f"new-{i}" for i in range(4)], "text": train.column("text"), "label": train.column("label")})
    night2 = pa.concat_tables([night2, new])
    # a "gold" file whose labels are rotated: the labeler looks much worse on it (forces a regression)
    labels = gold.column("label").to_pylist()
    bad_gold = gold.set_column(2, "label", pa.array(labels[1:] + labels[:1]))
    paths: dict = {"changed": changed, "removed": removed}
    for name, table in (("night1", night1), ("night2", night2), ("gold", gold), ("bad_gold", bad_gold)):
        paths[name] = root / f"{name}.parquet"
        pq.write_table(table, paths[name])
    return paths


@pytest.mark.slow
def test_two_nights_relabel_exactly_the_delta(ray_cluster, r8_small, trained_head, corpora, tmp_path):
    storage = StorageSettings()
    path = _write_pipeline(tmp_path, r8_small, trained_head, corpora["night1"], corpora["gold"])
    pipeline, job, _ = load_pipeline(path)

    first = run_night(pipeline, job, "2026-11-23", progress=False)
    assert first.counts["relabel"] == first.counts["new"] == first.counts["corpus"] == 80
    assert first.drift["previous_date"] is None and first.drift["status"] == "ok"
    assert first.drift["gold"]["rows"] == 35 and first.drift["gold"]["accuracy"] > 0.6

    # a retried night reuses the staged delta and duplicates nothing
    again = run_night(pipeline, job, "2026-11-23", progress=False)
    assert again.resumed and again.rows_labeled_this_run == 0 and again.counts == first.counts
    assert read_committed(first.partition, storage).num_rows == 80

    # night 2 through the CLI (the README's command), with the new corpus
    runner = CliRunner()
    result = runner.invoke(
        app, ["nightly", str(path), "--date", "2026-11-24", "--quiet", "--set", f"job.input.path={corpora['night2']}"]
    )
    assert result.exit_code == 0, result.output
    assert "7 of 82 rows re-labeled" in result.output
    second = tmp_path / "nightly" / "date=2026-11-24"
    labeled = read_committed(str(second), storage)
    reasons = dict(zip(labeled.column("id").to_pylist(), labeled.column("nightly_reason").to_pylist()))
    assert reasons == {**{i: "changed_text" for i in corpora["changed"]}, **{f"new-{i}": "new" for i in range(4)}}
    drift = json.loads((second / "drift.json").read_text())
    assert drift["previous_date"] == "2026-11-23" and not drift["fingerprint_changed"]
    assert drift["rows"] == {
        "new": 4, "changed_text": 3, "fingerprint": 0, "error": 0, "unchanged": 75,
        "corpus": 82, "relabel": 7, "removed": 2,
    }
    assert drift["accuracy_delta"] == 0.0 and drift["status"] == "ok"  # same labeler, same gold sample
    assert "## Drift vs previous night (2026-11-23)" in (second / "report.md").read_text()
    assert json.loads((second / "report.json").read_text())["drift"]["date"] == "2026-11-24"

    # the merged view: the 3 edited articles carry the label of night 2, the others night 1's
    current = current_labels(str(tmp_path / "nightly"), storage)
    dates = dict(zip(current.column("id").to_pylist(), current.column("date").to_pylist()))
    assert len(dates) == 84  # 80 + 4 new (removed ids keep their last label)
    assert {k for k, d in dates.items() if d == "2026-11-24"} == set(reasons)

    # night 3: a new labeler fingerprint (max_length changes the embedding) re-labels everything
    overrides = [f"job.input.path={corpora['night2']}", "job.method.max_length=96"]
    pipeline3, job3, _ = load_pipeline(path, overrides)
    third = run_night(pipeline3, job3, "2026-11-25", progress=False)
    assert third.counts["relabel"] == third.counts["fingerprint"] == 82
    assert third.drift["fingerprint_changed"]

    # the model changed after the night was staged: refuse instead of mixing labelers in one partition
    with pytest.raises(BatchlabelError, match="staged for labeler"):
        run_night(pipeline, load_pipeline(path, [f"job.input.path={corpora['night2']}"])[1], "2026-11-25", progress=False)

    # night 4: nothing changed, but the gold sample looks much worse -> regression, exit status 3
    result = runner.invoke(
        app,
        ["nightly", str(path), "--date", "2026-11-26", "--quiet", "--set", f"gold.path={corpora['bad_gold']}",
         *[x for o in overrides for x in ("--set", o)]],
    )
    assert result.exit_code == EXIT_REGRESSION, result.output
    assert "0 of 82 rows re-labeled" in result.output and "accuracy dropped" in result.output
    fourth = json.loads((tmp_path / "nightly" / "date=2026-11-26" / "drift.json").read_text())
    assert fourth["status"] == "regression" and fourth["rows"]["unchanged"] == 82
    assert fourth["label_shift_tvd"] == 0.0  # same labels as night 3


def _fake_run_job(spec, restart=False, progress=True, verbose=False, write_report=True):
    """run_job without Ray or a model: labels each row by its text's length into a committed output."""
    from batchlabel.hashing import text_hash
    from batchlabel.report import writers
    from batchlabel.report.metrics import build_report
    from batchlabel.run.pipeline import RunResult

    storage = StorageSettings()
    source = pq.read_table(spec.input.path)
    texts = source.column("text").to_pylist()
    gold = "gold" if "gold" in source.column_names else "label"
    table = pa.table({
        "id": source.column("id"),
        "label": pa.array(["a" if len(t) % 2 else "b" for t in texts], pa.string()),
        "gold": source.column(gold),
        "error": pa.nulls(len(texts), pa.string()),
        "confidence": pa.array([0.9] * len(texts)),
        "truncated": pa.array([False] * len(texts)),
        "text_hash": pa.array([text_hash(t) for t in texts], pa.string()),
        "labeler_fingerprint": pa.array(["fp-1"] * len(texts), pa.string()),
    })
    output = Path(spec.output.path)
    output.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, output / "part-0.parquet")
    manifest = {"job": spec.name, "shards": [{"file": "part-0.parquet"}]}
    (output / "_manifest.json").write_text(json.dumps(manifest))
    report = build_report(table, spec.label_names, {"job": spec.name})
    files = writers.write_report(report, str(output), storage, writers.report_title(spec.name)) if write_report else []
    return RunResult(str(output), manifest, report, files, table.num_rows, 0, 0.0, ["fp-1"])


def test_night_scans_partitions_once_and_writes_its_report_once(tmp_path, monkeypatch):
    """One latest_keys scan a night (staging and the drift check share it); report.json/.md written once,
    with the drift section in it (no write, read back and rewrite)."""
    import batchlabel.methods
    import batchlabel.nightly.night as night
    import batchlabel.run.pipeline
    from batchlabel.config import parse_job
    from batchlabel.nightly import partitions
    from batchlabel.nightly.drift import render_drift

    corpus = tmp_path / "corpus.parquet"
    texts = ["short", "a longer text", "odd", "even", "x" * 11, "yy"]
    labels = ["a", "b", "a", "b", "a", "b"]
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(6)], "text": texts, "label": labels}), corpus)
    job = parse_job({
        "name": "fake", "input": {"path": str(corpus), "gold_column": "label"}, "labels": ["a", "b"],
        "method": {"name": "embed", "head": str(tmp_path / "head")}, "output": {"path": str(tmp_path / "unused")},
    })
    pipeline = PipelineSpec.model_validate({
        "name": "p", "job": "unused.yaml", "output": str(tmp_path / "nightly"),
        "gold": {"path": str(corpus), "gold_column": "label"},
    })
    monkeypatch.setattr(batchlabel.run.pipeline, "run_job", _fake_run_job)
    monkeypatch.setattr(batchlabel.methods, "labeler_fingerprint", lambda spec, storage: "fp-1")
    scans = []
    real_latest_keys = partitions.latest_keys

    def counting_latest_keys(*args, **kwargs):
        scans.append(args)
        return real_latest_keys(*args, **kwargs)

    for module in (partitions, night):
        monkeypatch.setattr(module, "latest_keys", counting_latest_keys)
    writes: list[str] = []
    real_write = StorageSettings.write_bytes

    def counting_write(self, url: str, data: bytes) -> None:
        writes.append(url)
        real_write(self, url, data)

    monkeypatch.setattr(StorageSettings, "write_bytes", counting_write)

    def written(date: str, name: str) -> int:
        return writes.count(str(tmp_path / "nightly" / f"date={date}" / name))

    first = run_night(pipeline, job, "2026-11-23", progress=False)
    assert first.counts["relabel"] == 6 and len(scans) == 1
    partition = Path(first.partition)
    assert written("2026-11-23", "report.json") == written("2026-11-23", "report.md") == 1
    assert written("2026-11-23", "report.html") == written("2026-11-23", "drift.json") == 1
    assert writes.count(str(partition / "_gold" / "report.json")) == 1  # the gold sample keeps its own report
    report = json.loads((partition / "report.json").read_text())
    assert report["drift"] == first.drift and report["metrics"]["rows"] == 6
    markdown = (partition / "report.md").read_text()
    assert markdown.startswith("# batchlabel report: p-2026-11-23\n")
    assert markdown.endswith("\n\n" + render_drift(first.drift))
    assert "Drift vs previous night (none)" in (partition / "report.html").read_text()
    assert {str(partition / name) for name in ("report.json", "report.md", "drift.json")} <= set(first.files)

    # a retried night (staging skipped) still scans once and writes its report once more
    again = run_night(pipeline, job, "2026-11-23", progress=False)
    assert again.resumed and len(scans) == 2 and written("2026-11-23", "report.json") == 2

    # nothing changed: nothing labeled, no report, one scan
    second = run_night(pipeline, job, "2026-11-24", progress=False)
    assert second.counts["relabel"] == 0 and second.counts["unchanged"] == 6 and len(scans) == 3
    assert written("2026-11-24", "report.json") == 0 and written("2026-11-24", "drift.json") == 1
    assert second.drift["label_shift_tvd"] == 0.0 and second.drift["previous_date"] == "2026-11-23"


def test_staged_files_of_earlier_versions_stay_readable(tmp_path):
    """The staging meta key is part of the file format: a night staged by an earlier version still resumes."""
    from batchlabel.nightly.staging import read_staging_meta, write_staged

    meta = {"date": "2026-11-24", "fingerprint": "f1", "counts": {"relabel": 1}, "pipeline": "news"}
    earlier = str(tmp_path / "earlier.parquet")
    pq.write_table(pa.table({"id": ["a"]}).replace_schema_metadata({b"batchlabel.nightly": json.dumps(meta).encode()}), earlier)
    assert read_staging_meta(earlier, StorageSettings()) == meta
    now = str(tmp_path / "now.parquet")
    write_staged(now, StorageSettings(), pa.table({"id": ["a"]}), meta)
    assert pq.read_schema(now).metadata.keys() == {b"batchlabel.nightly"}
    assert read_staging_meta(now, StorageSettings()) == meta


def test_drift_thresholds():
    pipeline = PipelineSpec.model_validate(
        {"name": "p", "job": "x.yaml", "output": "out/x", "drift": {"max_accuracy_drop": 0.02, "max_label_shift": 0.1}}
    )
    counts = {"corpus": 10, "relabel": 1}
    previous = {"date": "2026-11-23", "fingerprint": "a", "gold": {"accuracy": 0.9, "macro_f1": 0.8},
                "label_distribution": {"x": 0.5, "y": 0.5}}
    ok = build_drift(pipeline, "2026-11-24", "a", counts, {"x": 0.45, "y": 0.55}, {"accuracy": 0.89, "macro_f1": 0.8}, previous)
    assert ok["status"] == "ok" and ok["label_shift_tvd"] == pytest.approx(0.05)
    bad = build_drift(pipeline, "2026-11-24", "b", counts, {"x": 0.2, "y": 0.8}, {"accuracy": 0.85, "macro_f1": 0.9}, previous)
    assert bad["status"] == "regression" and bad["fingerprint_changed"]
    assert [v.split()[0] for v in bad["violations"]] == ["accuracy", "label"]
    assert total_variation({"x": 1.0}, {"y": 1.0}) == 1.0


def test_pipeline_spec_and_date_errors(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\njob: missing.yaml\noutput: out/x\nschedul: {}\n")
    with pytest.raises(SpecError, match="schedul: unknown field"):
        load_pipeline(path)
    path.write_text("name: p\njob: missing.yaml\noutput: out/x\nschedule: {cron: '2 * *'}\n")
    with pytest.raises(SpecError, match="five-field cron"):
        load_pipeline(path)
    with pytest.raises(BatchlabelError, match="YYYY-MM-DD"):
        check_date("24-11-2026")
    with pytest.raises(BatchlabelError, match="not a valid calendar date"):
        check_date("2026-02-30")


def test_shipped_pipeline_loads_and_schedules(tmp_path):
    pipeline, job, raw = load_pipeline(REPO / "pipelines" / "nightly_news.yaml")
    assert job.name == "reuters-embed" and pipeline.gold is not None
    entry = crontab_entry(pipeline, "pipelines/nightly_news.yaml", REPO)
    lines = entry.strip().splitlines()
    assert lines[0] == "# >>> batchlabel nightly nightly-news >>>" and lines[-1].startswith("# <<<")
    fields = lines[1].split(maxsplit=5)
    assert " ".join(fields[:5]) == "30 2 * * *"
    assert f"nightly {REPO}/pipelines/nightly_news.yaml" in fields[5] and "flock -n" in fields[5]
    # installing twice replaces the block and keeps the user's other entries
    mine = "MAILTO=me\n0 * * * * /usr/bin/true\n"
    once = merge_crontab(mine, pipeline.name, entry)
    assert merge_crontab(once, pipeline.name, entry) == once and once.startswith(mine)

    result = CliRunner().invoke(app, ["schedule", str(REPO / "pipelines" / "nightly_news.yaml"), "--rayjob"])
    assert result.exit_code == 0, result.output
    config_map, cron_job = list(yaml.safe_load_all(result.output))
    assert cron_job["kind"] == "RayCronJob" and cron_job["spec"]["schedule"] == "30 2 * * *"
    template = cron_job["spec"]["jobTemplate"]
    assert template["entrypoint"].startswith("batchlabel nightly /etc/batchlabel/pipeline.yaml")
    assert template["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    inlined = yaml.safe_load(config_map["data"]["pipeline.yaml"])
    assert inlined["job"] == raw and inlined["name"] == "nightly-news"
    assert "secret" not in result.output.lower()


def test_deploy_manifests_parse_and_embed_valid_specs():
    """Every shipped KubeRay manifest parses, and the job/pipeline it carries is valid for batchlabel."""
    from batchlabel.config import parse_job

    files = sorted((REPO / "deploy").glob("*.yaml"))
    assert {f.name for f in files} >= {"rayjob-reuters-embed.yaml", "raycronjob-nightly-news.yaml"}
    for path in files:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        kinds = {d["kind"] for d in documents}
        assert kinds & {"RayJob", "RayCronJob"} and "ConfigMap" in kinds, path
        for document in documents:
            for name, text in document.get("data", {}).items():
                data = yaml.safe_load(text)
                if name == "job.yaml":
                    parse_job(data, source=str(path))
                else:
                    pipeline = PipelineSpec.model_validate(data)
                    parse_job(pipeline.job, source=str(path))
