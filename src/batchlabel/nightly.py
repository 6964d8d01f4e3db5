"""`batchlabel nightly`: incremental reclassification into date partitions, with a drift check.

Each night writes ``ROOT/date=YYYY-MM-DD/``:

    _input/corpus.parquet    (id, nightly_reason) of every corpus row tonight (reason null = kept)
    _input/delta.parquet     the rows to (re)label tonight, staged once, written last (a retry reuses it)
    part-*.parquet, _manifest.json, report.*     the labeled delta (the ordinary exactly-once sink)
    _gold/                   the gold sample labeled with tonight's labeler (metrics)
    drift.json, drift.md     comparison with the previous night; also appended to report.json/.md

A corpus row is re-labeled when its id is new, its text hash changed, the labeler fingerprint of
its latest label differs from tonight's (new model, prompt, label set...), or (relabel_errors)
its latest label was an error. Everything else keeps the label of the partition that holds it;
``current_labels`` merges the partitions into the corpus's current labels.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from batchlabel.errors import BatchlabelError
from batchlabel.fingerprint import text_hash
from batchlabel.pipeline_spec import PipelineSpec
from batchlabel.sink import read_committed, read_manifest
from batchlabel.spec import JobSpec, parse_job
from batchlabel.storage import StorageSettings, join

PARTITION_PREFIX = "date="
STAGING = "_input/delta.parquet"
CORPUS_KEYS = "_input/corpus.parquet"
GOLD_DIR = "_gold"
DRIFT_JSON = "drift.json"
DRIFT_MD = "drift.md"
REASON_COLUMN = "nightly_reason"
STAGING_META_KEY = b"batchlabel.nightly"
KEY_COLUMNS = ["id", "text_hash", "labeler_fingerprint", "label", "error"]
EXIT_REGRESSION = 3
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class NightResult:
    date: str
    partition: str
    fingerprint: str
    counts: dict[str, int]
    drift: dict[str, Any]
    rows_labeled_this_run: int
    resumed: bool
    files: list[str] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return self.drift.get("status") == "regression"


def check_date(value: str | None) -> str:
    """The night's date (YYYY-MM-DD); default: today (local time)."""
    if value is None:
        return dt.date.today().isoformat()
    if not _DATE.match(value):
        raise BatchlabelError(f"--date {value!r}: expected YYYY-MM-DD, for example 2026-11-24.")
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise BatchlabelError(f"--date {value!r} is not a valid calendar date.") from None
    return value


def partition_url(root: str, date: str) -> str:
    return join(root, f"{PARTITION_PREFIX}{date}")


def list_partitions(root: str, storage: StorageSettings) -> list[str]:
    """Dates of the ``date=YYYY-MM-DD`` directories under ``root``, ascending."""
    from pyarrow import fs as pafs

    filesystem, path = storage.resolve(root)
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as err:
        raise BatchlabelError(f"Cannot list the pipeline output {root}: {err}") from None
    dates = []
    for entry in entries:
        name = entry.base_name
        if entry.type == pafs.FileType.Directory and name.startswith(PARTITION_PREFIX):
            date = name[len(PARTITION_PREFIX) :]
            if _DATE.match(date):
                dates.append(date)
    return sorted(dates)


def latest_keys(root: str, storage: StorageSettings, before: str) -> dict[str, tuple]:
    """id -> (text_hash, fingerprint, label, error, date) of each id's latest label before ``before``.

    Only committed partitions count (a crashed night that never committed is ignored).
    """
    latest: dict[str, tuple] = {}
    for date in list_partitions(root, storage):
        if date >= before:
            break
        partition = partition_url(root, date)
        if read_manifest(partition, storage) is None:
            continue
        table = read_committed(partition, storage, columns=KEY_COLUMNS)
        columns = [table.column(name).to_pylist() for name in KEY_COLUMNS]
        for key, digest, fingerprint, label, error in zip(*columns):
            latest[key] = (digest, fingerprint, label, error, date)
    return latest


def current_labels(root: str, storage: StorageSettings, upto: str | None = None) -> pa.Table:
    """The corpus's current labels: the latest row of each id over committed partitions up to ``upto``.

    Ids removed from the corpus stay in it (they were labeled once); filter by the corpus if needed.
    """
    tables = []
    for date in list_partitions(root, storage):
        if upto is not None and date > upto:
            break
        partition = partition_url(root, date)
        if read_manifest(partition, storage) is None:
            continue
        table = read_committed(partition, storage)
        tables.append(table.append_column("date", pa.array([date] * table.num_rows, pa.string())))
    if not tables:
        raise BatchlabelError(f"{root} holds no committed nightly partition.")
    table = pa.concat_tables(tables, promote_options="permissive")
    seen: dict[str, int] = {}
    for index, key in enumerate(table.column("id").to_pylist()):
        seen[key] = index  # later partitions win
    return table.take(pa.array(sorted(seen.values())))


# --- staging ---


def _stage_delta(
    job: JobSpec, storage: StorageSettings, previous: dict[str, tuple], fingerprint: str, relabel_errors: bool
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Read the corpus shard by shard; return (rows to re-label, (id, reason) of every corpus row, counts)."""
    from batchlabel.source import plan_input, read_shards

    counts = Counter({"new": 0, "changed_text": 0, "fingerprint": 0, "error": 0, "unchanged": 0})
    parts: list[pa.Table] = []
    all_ids: list[str] = []
    all_reasons: list[str | None] = []
    plan = plan_input(job.input, storage, shard_rows=100_000)
    for file in plan.files:
        for table in read_shards(job.input, storage, file, file.shards):
            ids = table.column("id").to_pylist()
            reasons = []
            for key, text in zip(ids, table.column("text").to_pylist()):
                digest = text_hash(text) if isinstance(text, str) else None
                before = previous.get(key)
                if before is None:
                    reason = "new"
                elif before[0] != digest:
                    reason = "changed_text"
                elif before[1] != fingerprint:
                    reason = "fingerprint"
                elif relabel_errors and before[3] is not None:
                    reason = "error"
                else:
                    reason = None
                counts[reason or "unchanged"] += 1
                reasons.append(reason)
            all_ids += ids
            all_reasons += reasons
            table = table.drop_columns(["_shard", "_row"]).append_column(REASON_COLUMN, pa.array(reasons, pa.string()))
            parts.append(table.filter(pa.array([r is not None for r in reasons], pa.bool_())))
    delta = pa.concat_tables(parts, promote_options="permissive")
    corpus = pa.table({"id": pa.array(all_ids, pa.string()), REASON_COLUMN: pa.array(all_reasons, pa.string())})
    counts["corpus"] = plan.total_rows
    counts["relabel"] = delta.num_rows
    counts["removed"] = len(set(previous) - set(all_ids))
    return delta, corpus, dict(counts)


def _write_parquet(url: str, storage: StorageSettings, delta: pa.Table, meta: dict) -> None:
    schema = delta.schema.with_metadata({STAGING_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    buffer = io.BytesIO()
    pq.write_table(delta.replace_schema_metadata(schema.metadata), buffer, compression="zstd")
    storage.write_bytes(url, buffer.getvalue())


def _read_staging_meta(url: str, storage: StorageSettings) -> dict:
    filesystem, path = storage.resolve(url)
    metadata = pq.read_schema(path, filesystem=filesystem).metadata or {}
    if STAGING_META_KEY not in metadata:
        raise BatchlabelError(f"{url} was not written by `batchlabel nightly`; remove it and run the night again.")
    return json.loads(metadata[STAGING_META_KEY])


def _night_job(job_raw: JobSpec, name: str, input_spec: dict, output: str) -> JobSpec:
    data = job_raw.model_dump(mode="json")
    data["name"] = name
    data["input"] = input_spec
    data["output"]["path"] = output
    if data.get("train"):
        data["train"]["inline"] = False  # the nightly driver decides when to train
    return parse_job(data, source=f"nightly job {name}")


# --- drift ---


def _distribution(labels: list[str | None], errors: list[str | None], names: list[str]) -> dict[str, float]:
    counts = Counter(label if error is None else "(error)" for label, error in zip(labels, errors))
    total = sum(counts.values()) or 1
    keys = names + (["(error)"] if counts.get("(error)") else [])
    return {key: counts.get(key, 0) / total for key in keys}


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Half the L1 distance between two label distributions (0 = identical, 1 = disjoint)."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def _previous_drift(root: str, storage: StorageSettings, before: str) -> dict | None:
    for date in reversed(list_partitions(root, storage)):
        if date >= before:
            continue
        url = join(partition_url(root, date), DRIFT_JSON)
        if storage.exists(url):
            return json.loads(storage.read_bytes(url))
    return None


def build_drift(
    pipeline: PipelineSpec,
    date: str,
    fingerprint: str,
    counts: dict[str, int],
    distribution: dict[str, float],
    gold: dict | None,
    previous: dict | None,
) -> dict[str, Any]:
    """Compare tonight with the previous night and list the thresholds it violates."""
    thresholds = pipeline.drift
    drift: dict[str, Any] = {
        "pipeline": pipeline.name,
        "date": date,
        "previous_date": previous.get("date") if previous else None,
        "fingerprint": fingerprint,
        "previous_fingerprint": previous.get("fingerprint") if previous else None,
        "fingerprint_changed": bool(previous) and previous.get("fingerprint") != fingerprint,
        "rows": counts,
        "gold": gold,
        "previous_gold": previous.get("gold") if previous else None,
        "label_distribution": distribution,
        "previous_label_distribution": previous.get("label_distribution") if previous else None,
        "thresholds": thresholds.model_dump(),
    }
    violations: list[str] = []
    prev_gold = drift["previous_gold"]
    if gold and prev_gold:
        for metric, limit in (("accuracy", thresholds.max_accuracy_drop), ("macro_f1", thresholds.max_macro_f1_drop)):
            delta = gold[metric] - prev_gold[metric]
            drift[f"{metric}_delta"] = delta
            if limit is not None and -delta > limit + 1e-12:
                violations.append(f"{metric} dropped by {-delta:.4f} (> {limit}) vs {drift['previous_date']}")
    prev_dist = drift["previous_label_distribution"]
    if prev_dist is not None:
        shift = total_variation(distribution, prev_dist)
        drift["label_shift_tvd"] = shift
        drift["label_share_delta"] = {
            k: distribution.get(k, 0.0) - prev_dist.get(k, 0.0) for k in sorted(set(distribution) | set(prev_dist))
        }
        if thresholds.max_label_shift is not None and shift > thresholds.max_label_shift + 1e-12:
            violations.append(f"label distribution shifted by {shift:.4f} (TVD > {thresholds.max_label_shift})")
    drift["violations"] = violations
    drift["status"] = "regression" if violations else "ok"
    return drift


def render_drift(drift: dict[str, Any]) -> str:
    """The drift section as Markdown."""
    rows = drift["rows"]
    lines = [
        f"## Drift vs previous night ({drift['previous_date'] or 'none'})",
        "",
        f"- night: {drift['date']}, status: **{drift['status']}**",
        f"- labeler fingerprint: `{drift['fingerprint']}`" + (" (changed: everything re-labeled)" if drift["fingerprint_changed"] else ""),
        f"- corpus rows: {rows['corpus']}; re-labeled tonight: {rows['relabel']} (new {rows['new']}, changed text "
        f"{rows['changed_text']}, new fingerprint {rows['fingerprint']}, earlier errors {rows['error']}); "
        f"unchanged {rows['unchanged']}; removed since earlier nights {rows['removed']}",
    ]
    gold, prev = drift.get("gold"), drift.get("previous_gold")
    if gold:
        line = f"- gold sample ({gold['rows']} rows): accuracy {gold['accuracy']:.4f}, macro-F1 {gold['macro_f1']:.4f}"
        if prev:
            line += f" (Δ accuracy {drift['accuracy_delta']:+.4f}, Δ macro-F1 {drift['macro_f1_delta']:+.4f})"
        lines.append(line)
    else:
        lines.append("- no gold sample configured: accuracy/F1 not tracked")
    if "label_shift_tvd" in drift:
        lines.append(f"- label distribution shift (total variation): {drift['label_shift_tvd']:.4f}")
    lines += ["", "| label | share | previous | Δ |", "|---|---:|---:|---:|"]
    prev_dist = drift.get("previous_label_distribution") or {}
    for label, share in drift["label_distribution"].items():
        before = prev_dist.get(label)
        delta = f"{share - before:+.4f}" if before is not None else ""
        lines.append(f"| {label} | {share:.4f} | {'' if before is None else f'{before:.4f}'} | {delta} |")
    if drift["violations"]:
        lines += ["", "### Regressions", ""] + [f"- {v}" for v in drift["violations"]]
    return "\n".join(lines) + "\n"


def _append_to_report(partition: str, storage: StorageSettings, drift: dict, markdown: str) -> list[str]:
    """Add the drift section to the partition's report.json/.md (written just before by run_job)."""
    written = []
    report_json, report_md = join(partition, "report.json"), join(partition, "report.md")
    if storage.exists(report_json):
        report = json.loads(storage.read_bytes(report_json))
        report["drift"] = drift
        storage.write_bytes(report_json, json.dumps(report, indent=2).encode())
        written.append(report_json)
    if storage.exists(report_md):
        text = storage.read_bytes(report_md).decode()
        storage.write_bytes(report_md, (text.rstrip("\n") + "\n\n" + markdown).encode())
        written.append(report_md)
    return written


# --- the night ---


def run_night(
    pipeline: PipelineSpec,
    job: JobSpec,
    date: str | None = None,
    progress: bool = True,
    verbose: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> NightResult:
    """Run one night: (re-train), stage the delta, label it, evaluate the gold sample, write drift."""
    from batchlabel.methods import labeler_fingerprint
    from batchlabel.pipeline import run_job

    date = check_date(date)
    storage = StorageSettings.from_spec(job.storage)
    root = pipeline.output
    partition = partition_url(root, date)
    staging, corpus_url = join(partition, STAGING), join(partition, CORPUS_KEYS)
    resumed = storage.exists(staging)
    if resumed:
        meta = _read_staging_meta(staging, storage)
        fingerprint = labeler_fingerprint(job, storage)
        if meta["fingerprint"] != fingerprint:
            raise BatchlabelError(
                f"The night {date} was staged for labeler {meta['fingerprint']}, but the job's labeler is now "
                f"{fingerprint} (the model, prompt or label set changed). Remove {partition} to redo the night."
            )
        counts = meta["counts"]
        log(f"night {date}: resuming the staged delta ({counts['relabel']} rows) in {partition}")
    else:
        if pipeline.retrain:
            from batchlabel.train import train_model

            log(f"night {date}: re-training the model")
            train_model(job, progress=progress)
        elif job.train is not None and job.train.inline:
            from batchlabel.train import train_if_missing

            train_if_missing(job, progress=progress)
        fingerprint = labeler_fingerprint(job, storage)
        previous = latest_keys(root, storage, before=date)
        delta, corpus, counts = _stage_delta(job, storage, previous, fingerprint, pipeline.relabel_errors)
        meta = {"date": date, "fingerprint": fingerprint, "counts": counts, "pipeline": pipeline.name}
        _write_parquet(corpus_url, storage, corpus, meta)
        _write_parquet(staging, storage, delta, meta)  # written last: its presence means "staged"
        log(
            f"night {date}: {counts['relabel']} of {counts['corpus']} rows to label (new {counts['new']}, changed "
            f"{counts['changed_text']}, fingerprint {counts['fingerprint']}, errors {counts['error']})"
        )
    rows_labeled = 0
    files: list[str] = []
    if counts["relabel"]:
        night_input = {
            "path": staging,
            "format": "parquet",
            "gold_column": "gold" if job.input.gold_column else None,
            "passthrough": [*job.input.passthrough, REASON_COLUMN],
        }
        result = run_job(_night_job(job, f"{pipeline.name}-{date}", night_input, partition), progress=progress, verbose=verbose)
        rows_labeled = result.rows_labeled_this_run
        files += result.report_files
    gold_metrics = None
    if pipeline.gold is not None:
        gold_job = _night_job(job, f"{pipeline.name}-{date}-gold", pipeline.gold.model_dump(mode="json"), join(partition, GOLD_DIR))
        gold_result = run_job(gold_job, progress=progress, verbose=verbose)
        metrics = gold_result.report.get("metrics")
        if metrics:
            gold_metrics = {k: metrics[k] for k in ("rows", "accuracy", "macro_f1", "weighted_f1")}
    distribution = _current_distribution(root, partition, storage, date, corpus_url, bool(counts["relabel"]), job.label_names)
    drift = build_drift(pipeline, date, fingerprint, counts, distribution, gold_metrics, _previous_drift(root, storage, date))
    markdown = render_drift(drift)
    storage.write_bytes(join(partition, DRIFT_JSON), json.dumps(drift, indent=2).encode())
    storage.write_bytes(join(partition, DRIFT_MD), (f"# batchlabel nightly: {pipeline.name} {date}\n\n" + markdown).encode())
    files += [join(partition, DRIFT_JSON), join(partition, DRIFT_MD)]
    files += _append_to_report(partition, storage, drift, markdown)
    return NightResult(date, partition, fingerprint, counts, drift, rows_labeled, resumed, sorted(set(files)))


def _current_distribution(
    root: str, partition: str, storage: StorageSettings, date: str, corpus_url: str, labeled: bool, names: list[str]
) -> dict[str, float]:
    """Label shares over tonight's corpus: tonight's labels for the delta, the latest earlier ones otherwise."""
    corpus = pq.read_table(io.BytesIO(storage.read_bytes(corpus_url)))
    earlier = latest_keys(root, storage, before=date)
    tonight: dict[str, tuple] = {}
    if labeled:
        table = read_committed(partition, storage, columns=["id", "label", "error"])
        tonight = dict(zip(table.column("id").to_pylist(), zip(table.column("label").to_pylist(), table.column("error").to_pylist())))
    labels, errors = [], []
    for key, reason in zip(corpus.column("id").to_pylist(), corpus.column(REASON_COLUMN).to_pylist()):
        if reason is not None:
            label, error = tonight[key]
        else:
            label, error = earlier[key][2], earlier[key][3]
        labels.append(label)
        errors.append(error)
    return _distribution(labels, errors, names)
