"""The nightly pipeline spec (`pipelines/*.yaml`): an incremental labeling run of one job each night.

A pipeline names the job it runs (a job spec file or an inline mapping), the root directory under
which each night writes its ``date=YYYY-MM-DD/`` partition, an optional gold sample for
evaluation, the drift thresholds past which the night fails, and the schedule.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from batchlabel.config.base import StrictModel, format_validation_error
from batchlabel.config.input import InputSpec
from batchlabel.config.job import JobSpec, load_yaml, parse_job
from batchlabel.config.overrides import apply_overrides
from batchlabel.errors import SpecError

JOB_OVERRIDE_PREFIX = "job."
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?#LW]+$")


class DriftSpec(StrictModel):
    """Regression thresholds, compared with the previous night; a night past any of them exits non-zero."""

    max_accuracy_drop: float | None = Field(
        0.02, ge=0, description="Largest allowed drop of gold-sample accuracy vs the previous night (None = no check)."
    )
    max_macro_f1_drop: float | None = Field(
        0.03, ge=0, description="Largest allowed drop of gold-sample macro-F1 vs the previous night (None = no check)."
    )
    max_label_shift: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Largest allowed total-variation distance between the corpus label distributions of this and "
        "the previous night (0 = identical, 1 = disjoint; None = no check).",
    )


class ScheduleSpec(StrictModel):
    """When `batchlabel schedule` runs the pipeline (crontab line or KubeRay RayCronJob)."""

    cron: str = Field("30 2 * * *", description="Five-field cron expression (minute hour day month weekday).")
    timezone: str | None = Field(
        None, description="IANA time zone of the cron expression (CRON_TZ / RayCronJob timeZone); default: the host's."
    )
    log: str = Field("out/nightly/{name}.log", description="Log file the crontab entry appends to ({name} = pipeline name).")
    image: str = Field(
        "batchlabel:latest",
        description="Container image with batchlabel installed (`pip install '.[vllm]'`), used by the RayCronJob.",
    )
    gpus: int = Field(1, ge=0, description="GPUs of the RayCronJob's worker pod (0 = CPU only).")

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"{value!r} is not a five-field cron expression such as '30 2 * * *'")
        return " ".join(fields)


class PipelineSpec(StrictModel):
    """A nightly incremental reclassification of a corpus."""

    name: str = Field(description="Pipeline name (used in logs, crontab markers and job names).")
    job: str | dict[str, Any] = Field(
        description="The job to run: a job spec path (relative to this file) or an inline job mapping. "
        "Its output.path is replaced by the night's partition."
    )
    output: str = Field(description="Root directory (local or s3://); each night writes date=YYYY-MM-DD/ under it.")
    retrain: bool = Field(
        False, description="Re-train the job's model (`batchlabel train`) before labeling each night."
    )
    relabel_errors: bool = Field(True, description="Also re-label rows whose previous label was an error row.")
    gold: InputSpec | None = Field(
        None, description="Gold-labeled sample labeled each night to measure accuracy/F1 (gold_column required)."
    )
    drift: DriftSpec = Field(default_factory=DriftSpec, description="Regression thresholds vs the previous night.")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description="When the pipeline runs.")

    @field_validator("gold")
    @classmethod
    def _gold_needs_column(cls, value: InputSpec | None) -> InputSpec | None:
        if value is not None and not value.gold_column:
            raise ValueError("gold.gold_column must name the column with the gold labels")
        return value


def _split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``job.x=y`` overrides go to the job spec, the others to the pipeline."""
    job = [item[len(JOB_OVERRIDE_PREFIX) :] for item in overrides if item.startswith(JOB_OVERRIDE_PREFIX)]
    pipeline = [item for item in overrides if not item.startswith(JOB_OVERRIDE_PREFIX)]
    return pipeline, job


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> tuple[PipelineSpec, JobSpec, dict[str, Any]]:
    """Load a pipeline file and its job; ``--set job.a.b=v`` edits the job, ``--set a.b=v`` the pipeline.

    Returns (pipeline, job spec, resolved job mapping) - the mapping is what an inline copy needs.
    """
    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(f"Invalid pipeline {path}: the top level must be a mapping of fields.")
    pipeline_items, job_items = _split_overrides(overrides or [])
    data = apply_overrides(data, pipeline_items)
    try:
        pipeline = PipelineSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, str(path), kind="pipeline")) from None
    if isinstance(pipeline.job, str):
        job_path = Path(pipeline.job)
        if not job_path.is_absolute():
            job_path = path.parent / job_path
        raw = load_yaml(job_path)
        source = str(job_path)
    else:
        raw = copy.deepcopy(pipeline.job)
        source = f"{path} (job)"
    if not isinstance(raw, dict):
        raise SpecError(f"Invalid job spec {source}: the top level must be a mapping of fields.")
    raw = apply_overrides(raw, job_items)
    job = parse_job(raw, source=source)
    return pipeline, job, raw
