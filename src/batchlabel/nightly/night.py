"""`batchlabel nightly`: incremental reclassification into date partitions, with a drift check.

Each night writes ``ROOT/date=YYYY-MM-DD/`` (partitions.py):

    _input/corpus.parquet, _input/delta.parquet   the staged delta (staging.py); a retry reuses it
    part-*.parquet, _manifest.json, report.*     the labeled delta (the ordinary exactly-once sink)
    _gold/                   the gold sample labeled with tonight's labeler (metrics)
    drift.json, drift.md     comparison with the previous night (drift.py); also the last section of the report

A corpus row is re-labeled when its id is new, its text hash changed, the labeler fingerprint of
its latest label differs from tonight's (new model, prompt, label set...), or (relabel_errors)
its latest label was an error. Everything else keeps the label of the partition that holds it;
``partitions.current_labels`` merges the partitions into the corpus's current labels.

The committed partitions are scanned once a night (``latest_keys``): staging and the drift check share it.
The night's report is written once, with the drift section in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from batchlabel.config import JobSpec
from batchlabel.config.nightly import PipelineSpec
from batchlabel.errors import BatchlabelError
from batchlabel.io.storage import StorageSettings, join
from batchlabel.nightly.drift import build_drift, current_distribution, previous_drift, render_drift, write_drift
from batchlabel.nightly.partitions import check_date, latest_keys, partition_url
from batchlabel.nightly.staging import STAGING, delta_input, night_job, read_staging_meta, stage_night
from batchlabel.report.writers import report_title, write_report

EXIT_REGRESSION = 3
GOLD_DIR = "_gold"
GOLD_METRICS = ("rows", "accuracy", "macro_f1", "weighted_f1")


@dataclass
class NightResult:
    """What one night did: its counts, drift (status "regression" past the thresholds) and the files written."""

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


def run_night(
    pipeline: PipelineSpec,
    job: JobSpec,
    date: str | None = None,
    progress: bool = True,
    verbose: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> NightResult:
    """Run one night: (re-train), stage the delta, label it, evaluate the gold sample, write drift and the report."""
    from batchlabel.methods import labeler_fingerprint
    from batchlabel.run.pipeline import run_job

    date = check_date(date)
    storage = StorageSettings.from_spec(job.storage)
    root = pipeline.output
    partition = partition_url(root, date)
    staging = join(partition, STAGING)
    resumed = storage.exists(staging)
    if resumed:
        fingerprint = labeler_fingerprint(job, storage)
        counts = _staged_counts(staging, storage, fingerprint, date, partition)
        log(f"night {date}: resuming the staged delta ({counts['relabel']} rows) in {partition}")
    else:
        _train(pipeline, job, date, progress, log)
        fingerprint = labeler_fingerprint(job, storage)
    previous = latest_keys(root, storage, before=date)  # the night's one scan of the committed partitions
    if not resumed:
        meta = {"date": date, "fingerprint": fingerprint, "pipeline": pipeline.name}
        counts = stage_night(job, storage, partition, previous, meta, pipeline.relabel_errors)
        log(
            f"night {date}: {counts['relabel']} of {counts['corpus']} rows to label (new {counts['new']}, changed "
            f"{counts['changed_text']}, fingerprint {counts['fingerprint']}, errors {counts['error']})"
        )
    delta_job, delta = None, None
    if counts["relabel"]:
        delta_job = night_job(job, f"{pipeline.name}-{date}", delta_input(job, partition), partition)
        delta = run_job(delta_job, progress=progress, verbose=verbose, write_report=False)
    gold_metrics = _gold_metrics(pipeline, job, partition, date, progress, verbose)
    distribution = current_distribution(partition, storage, previous, delta is not None, job.label_names)
    drift = build_drift(pipeline, date, fingerprint, counts, distribution, gold_metrics, previous_drift(root, storage, date))
    markdown = render_drift(drift)
    files = write_drift(partition, storage, drift, markdown, f"batchlabel nightly: {pipeline.name} {date}")
    if delta_job is not None and delta_job.eval.enabled:
        report = {**delta.report, "drift": drift}
        files += write_report(report, partition, storage, report_title(delta_job.name), sections=[markdown])
    rows_labeled = delta.rows_labeled_this_run if delta is not None else 0
    return NightResult(date, partition, fingerprint, counts, drift, rows_labeled, resumed, sorted(set(files)))


def _staged_counts(staging: str, storage: StorageSettings, fingerprint: str, date: str, partition: str) -> dict[str, int]:
    """The counts of a night staged earlier; refuse when it was staged for another labeler."""
    meta = read_staging_meta(staging, storage)
    if meta["fingerprint"] != fingerprint:
        raise BatchlabelError(
            f"The night {date} was staged for labeler {meta['fingerprint']}, but the job's labeler is now "
            f"{fingerprint} (the model, prompt or label set changed). Remove {partition} to redo the night."
        )
    return meta["counts"]


def _train(pipeline: PipelineSpec, job: JobSpec, date: str, progress: bool, log: Callable[[str], None]) -> None:
    """Re-train the model when the pipeline says so, else train it when the job trains inline and it is missing."""
    if pipeline.retrain:
        from batchlabel.training.base import train_model

        log(f"night {date}: re-training the model")
        train_model(job, progress=progress)
    elif job.train is not None and job.train.inline:
        from batchlabel.training.base import train_if_missing

        train_if_missing(job, progress=progress)


def _gold_metrics(
    pipeline: PipelineSpec, job: JobSpec, partition: str, date: str, progress: bool, verbose: bool
) -> dict | None:
    """Label the pipeline's gold sample into ``_gold/`` (its own report) and return its headline metrics."""
    from batchlabel.run.pipeline import run_job

    if pipeline.gold is None:
        return None
    gold_job = night_job(job, f"{pipeline.name}-{date}-gold", pipeline.gold.model_dump(mode="json"), join(partition, GOLD_DIR))
    metrics = run_job(gold_job, progress=progress, verbose=verbose).report.get("metrics")
    return {key: metrics[key] for key in GOLD_METRICS} if metrics else None
