"""A cascade job seen one stage at a time: each stage as a job of its own (its method, its runtime), the
stage a train section trains, and the fingerprint chain that covers every stage and threshold.

A stage job is the cascade job with ``method`` = the stage's method, ``runtime`` = the job's runtime with the
stage's overrides, and ``train`` kept only when it trains that stage's kind of method; every stage job keeps
the text (a later stage relabels from it; the last stage drops it unless ``output.keep_text``).
"""

from __future__ import annotations

from batchlabel.config.job import JobSpec, parse_job
from batchlabel.config.methods import CascadeMethod
from batchlabel.config.train import TRAINS_FOR
from batchlabel.errors import SpecError
from batchlabel.hashing import stable_hash


def is_cascade(job: JobSpec) -> bool:
    return isinstance(job.method, CascadeMethod)


def stage_job(job: JobSpec, index: int) -> JobSpec:
    """Stage ``index`` (0-based) of a cascade job as a job of its own (validated like any job)."""
    assert isinstance(job.method, CascadeMethod)
    stage = job.method.stages[index]
    data = job.model_dump()
    data["method"] = stage.method.model_dump()
    if stage.runtime is not None:
        data["runtime"] = {**data["runtime"], **stage.runtime.model_dump(exclude_unset=True)}
    if job.train is not None and TRAINS_FOR[job.train.method] != stage.method.name:
        data["train"] = None
    data["output"]["keep_text"] = True
    return parse_job(data, source=f"{job.name}: method.stages[{index}]")


def stage_jobs(job: JobSpec) -> list[JobSpec]:
    """Every stage of a cascade job as a job (raises a SpecError naming a stage that is not a valid job)."""
    assert isinstance(job.method, CascadeMethod)
    return [stage_job(job, index) for index in range(len(job.method.stages))]


def trained_job(job: JobSpec) -> JobSpec:
    """The job whose model ``job.train`` trains: the job itself, or the first cascade stage of that method."""
    if not is_cascade(job) or job.train is None:
        return job
    wants = TRAINS_FOR[job.train.method]
    for index, stage in enumerate(job.method.stages):
        if stage.method.name == wants:
            return stage_job(job, index)
    raise SpecError(f"train.method {job.train.method!r} trains for method {wants!r}, but no cascade stage is {wants!r}.")


def chain_fingerprint(previous: str | None, below: float | None, stage: str) -> str:
    """The cascade's fingerprint after one more stage: the one before it, the threshold, the stage's own."""
    return stable_hash({"previous": previous, "min_confidence": below, "stage": stage})


def cascade_fingerprint(job: JobSpec, stage_fingerprints: list[str]) -> str:
    """The fingerprint stamped on every row of a cascade's output (all stages' fingerprints and thresholds)."""
    assert isinstance(job.method, CascadeMethod)
    value, below = None, None
    for stage, fingerprint in zip(job.method.stages, stage_fingerprints):
        value = chain_fingerprint(value, below, fingerprint)
        below = stage.min_confidence
    return value
