"""The labeling pipeline: plan → read (Ray tasks) → label (Ray actor pool) → commit shards → report.

    from_items(read units) ─map_batches(read_unit)─► rows tagged with (_shard, _row)
      ─repartition(target_num_rows_per_block=batch_size)─►   (no one-block/one-actor trap)
      ─map_batches(LabelingActor, ActorPoolStrategy)─►       (one actor per GPU / CPU slot)
      ─iter_batches─► ShardSink (driver): commits each complete shard, manifest last
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa

from batchlabel.config import InputSpec, JobSpec
from batchlabel.errors import BatchlabelError
from batchlabel.io.sink import MANIFEST, ShardSink, read_committed, read_manifest
from batchlabel.io.source import InputFile, InputPlan, Shard, plan_input, read_shards
from batchlabel.io.storage import StorageSettings
from batchlabel.report import writers
from batchlabel.report.metrics import build_report
from batchlabel.run.progress import RowProgress

REPORT_COLUMNS = ["label", "gold", "error", "confidence", "truncated", "labeler_fingerprint"]


@dataclass
class RunResult:
    """What run_job did; ``report`` is the report dict, ``report_files`` the URLs written (empty when none)."""

    output: str
    manifest: dict
    report: dict
    report_files: list[str]
    rows_labeled_this_run: int
    skipped_shards: int
    wall_time_s: float
    fingerprints: list[str] = field(default_factory=list)


def read_unit(batch: pa.Table, input_json: str, storage: StorageSettings) -> Iterator[pa.Table]:
    """Ray Data task: read one input file and yield one table per still-to-do shard."""
    spec = InputSpec.model_validate_json(input_json)
    for unit_json in batch.column("unit").to_pylist():
        unit = json.loads(unit_json)
        file = InputFile(url=unit["url"], format=unit["format"], index=unit["index"])
        shards = [Shard(**s) for s in unit["shards"]]
        yield from read_shards(spec, storage, file, shards)


def _read_units(plan: InputPlan, todo: set[str]) -> list[dict]:
    units = []
    for file in plan.files:
        shards = [s.__dict__ for s in file.shards if s.key in todo]
        if shards:
            units.append({"unit": json.dumps({"url": file.url, "format": file.format, "index": file.index, "shards": shards})})
    return units


def _labeled_batches(spec: JobSpec, storage: StorageSettings, plan: InputPlan, todo: set[str], verbose: bool):
    """Stream labeled pyarrow batches from Ray for the shards in ``todo``."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    from batchlabel.run.actor import LabelingActor
    from batchlabel.run.ray_runtime import READ_TASK_CPUS, actor_cpus, actor_threads, ray_session

    with ray_session(spec.runtime, verbose=verbose) as cluster:
        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = verbose
        context.execution_no_progress_timeout_s = spec.runtime.stall_timeout_s
        units = _read_units(plan, todo)
        dataset = ray.data.from_items(units, override_num_blocks=len(units))
        dataset = dataset.map_batches(
            read_unit,
            fn_kwargs={"input_json": spec.input.model_dump_json(), "storage": storage},
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=READ_TASK_CPUS,
        )
        dataset = dataset.repartition(target_num_rows_per_block=spec.runtime.batch_size)
        dataset = dataset.map_batches(
            LabelingActor,
            fn_constructor_args=(spec.model_dump_json(), actor_threads(spec.runtime, cluster)),
            compute=ActorPoolStrategy(size=spec.runtime.actors),
            batch_size=spec.runtime.batch_size,
            batch_format="pyarrow",
            num_cpus=actor_cpus(spec.runtime, cluster),
            num_gpus=spec.runtime.gpus_per_actor or None,
        )
        yield from dataset.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=2)


def _explain_failure(err: BaseException) -> BatchlabelError:
    """Turn a Ray failure into one paragraph, surfacing our own error when it caused it."""
    seen = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BatchlabelError):
            return current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    text = str(err).strip().splitlines()
    for line in text:
        if "BatchlabelError" in line or "InputError" in line or "OutputError" in line:
            return BatchlabelError(line.split(":", 1)[-1].strip())
    first = text[-1] if text else type(err).__name__
    return BatchlabelError(
        f"The labeling pipeline failed ({type(err).__name__}: {first[:400]}). Shards committed so far are kept; "
        "run the same command again to resume (BATCHLABEL_DEBUG=1 and --verbose show details)."
    )


def preflight(spec: JobSpec, storage: StorageSettings) -> None:
    """Cheap checks in the driver so that a missing model fails before Ray starts."""
    from batchlabel.methods import preflight_method

    preflight_method(spec, storage)


def run_job(
    spec: JobSpec, restart: bool = False, progress: bool = True, verbose: bool = False, write_report: bool = True
) -> RunResult:
    """Label ``spec.input`` into ``spec.output.path``; resume committed shards; build (and write) the report.

    ``write_report=False``: compute the report but write nothing (``report_files`` is empty), for a caller
    that adds sections before writing it once with ``report.writers.write_report`` (the nightly driver).
    """
    storage = StorageSettings.from_spec(spec.storage)
    output = spec.output.path
    if spec.train is not None and spec.train.inline:
        from batchlabel.training.base import train_if_missing

        train_if_missing(spec, progress=progress)
    started = time.monotonic()  # wall time and rows/s cover labeling (Ray start included), not training
    preflight(spec, storage)
    plan = plan_input(spec.input, storage, spec.output.shard_rows)
    run_info = {
        "job": spec.name,
        "method": spec.method.name,
        "labels": spec.label_names,
        "spec_hash": spec.result_hash(),
        "plan": plan.fingerprint(),
        "planned_rows": plan.total_rows,
        "planned_shards": len(plan.shards),
    }
    sink = ShardSink(output, storage, plan, run_info)
    committed = sink.open(restart=restart)
    todo = {s.key for s in plan.shards} - committed
    rows_todo = sum(s.rows for s in plan.shards if s.key in todo)
    fingerprints: set[str] = set()
    first_batch: tuple[float, int] | None = None  # (seconds from start, rows): start-up vs steady state
    if todo:
        with RowProgress(rows_todo, f"labeling {spec.name}", enabled=progress) as bar:
            try:
                for batch in _labeled_batches(spec, storage, plan, todo, verbose):
                    if first_batch is None:
                        first_batch = (time.monotonic() - started, batch.num_rows)
                    fingerprints.update(batch.column("labeler_fingerprint").unique().to_pylist())
                    sink.add(batch)
                    bar.advance(batch.num_rows)
            except BatchlabelError:
                raise
            except Exception as err:  # Ray wraps everything; explain it in one paragraph
                raise _explain_failure(err) from None
    wall = time.monotonic() - started
    previous = read_manifest(output, storage) if not todo else None
    manifest = previous or sink.finish(extra={"fingerprints": sorted(fingerprints)})
    table = read_committed(output, storage, columns=REPORT_COLUMNS)
    all_fingerprints = sorted(set(table.column("labeler_fingerprint").to_pylist()) - {""})
    run = {
        "job": spec.name,
        "method": spec.method.name,
        "fingerprint": all_fingerprints[0] if len(all_fingerprints) == 1 else all_fingerprints,
        "wall_time_s": wall,
        "rows_labeled_this_run": sink.rows_written,
        "rows_per_s": sink.rows_written / wall if wall > 0 else 0.0,
        "shards_skipped_as_committed": len(committed),
    }
    if first_batch is not None:
        # start-up = Ray start + actor start + model load + the first batch; steady = everything after it
        run["first_batch_s"] = first_batch[0]
        steady_s, steady_rows = wall - first_batch[0], sink.rows_written - first_batch[1]
        run["steady_rows_per_s"] = steady_rows / steady_s if steady_s > 0 and steady_rows > 0 else None
    report = build_report(table, spec.label_names, run) if spec.eval.enabled else {}
    files: list[str] = []
    if spec.eval.enabled and write_report:
        files = writers.write_report(report, output, storage, writers.report_title(spec.name))
    return RunResult(output, manifest, report, files, sink.rows_written, len(committed), wall, all_fingerprints)


def evaluate_output(output: str, storage: StorageSettings, labels: list[str] | None = None) -> tuple[dict, list[str]]:
    """Recompute the report of a committed output directory."""
    manifest = read_manifest(output, storage)
    if manifest is None:
        raise BatchlabelError(f"{output} holds no committed batchlabel run (no {MANIFEST}).")
    labels = labels or manifest["labels"]
    table = read_committed(output, storage, columns=REPORT_COLUMNS)
    report = build_report(table, labels, {"job": manifest.get("job"), "method": manifest.get("method")})
    files = writers.write_report(report, output, storage, writers.report_title(manifest.get("job", output)))
    return report, files
