"""The labeling pipeline: plan (metadata only) → read + label (actors) → write (Ray tasks) → manifest → report.

    from_items(shard_items(plan))          one descriptor block per shard to do            (io/datasource.py)
      ─label_dataset(internal=True)─►     actor pool: the free actor reads a shard, labels it (run/label_dataset.py)
      ─write_datasink(ShardDatasink)─►    write(): each complete shard committed where it is (io/datasink.py)
      on_write_complete() (driver):       merge pieces, commit empty shards, check duplicate ids, manifest last

Nothing but metadata passes through the driver: the plan, the commit markers, a few duplicate candidates.
Progress comes from a tiny ledger actor that the write tasks report their commits to; the actors report which
shard each labeled when (``RunResult.timeline``, the report's ``run.actors``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from batchlabel.config import JobSpec
from batchlabel.errors import BatchlabelError, InputError
from batchlabel.io.planning import plan_input
from batchlabel.io.shards import InputPlan
from batchlabel.io.sink import MANIFEST, ShardCommit, ShardSink, merge_pieces, read_committed, read_manifest
from batchlabel.io.storage import StorageSettings
from batchlabel.report import writers
from batchlabel.report.metrics import build_report
from batchlabel.run.progress import CommitLedger, RowProgress, actor_shares

REPORT_COLUMNS = ["label", "gold", "error", "confidence", "truncated", "labeler_fingerprint",
                  "tokens_prompt", "tokens_cached", "tokens_output"]  # tokens: report.usage


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
    timeline: list[dict] = field(default_factory=list)  # per shard: actor, rows, read/label/done/commit times


def _location(plan: InputPlan, key: str, row: int) -> str:
    file = plan.files[int(key.split("-")[0])]
    return f"{file.url} row {row}" if file.format == "parquet" else f"{file.url} shard {key} row {row}"


class Finalizer:
    """Driver side of the commit: ``Datasink.on_write_complete`` calls it with every write task's returns."""

    def __init__(self, sink: ShardSink, plan: InputPlan, ledger=None):
        self.sink, self.plan, self.ledger = sink, plan, ledger
        self.new: list[ShardCommit] = []
        self.manifest: dict | None = None

    def __call__(self, returns: list[dict]) -> None:
        sink = self.sink
        self.new = [ShardCommit(**r["marker"]) for r in returns if "marker" in r]
        pieces = sorted({r["piece"] for r in returns if "piece" in r} - {m.key for m in self.new})
        if pieces:
            import ray

            merge = ray.remote(num_cpus=0.5)(merge_pieces)
            self.new += [m for m in ray.get([merge.remote(sink.output, sink.storage, k) for k in pieces]) if m]
        for marker in self.new:
            sink.record(marker)
        if self.ledger is not None:
            import ray

            for key in ray.get(self.ledger.empty_keys.remote()):
                if key not in sink.committed:
                    sink.commit_empty(key)
        if sink.missing():
            sink.finish()  # refuses: names the missing shards
        self.check_unique()
        fingerprints = sorted({f for m in sink.committed.values() for f in m.fingerprints})
        self.manifest = sink.finish(extra={"fingerprints": fingerprints})

    def check_unique(self) -> None:
        """Refuse the run when an id occurs twice (the ids of every committed shard, checked by Ray tasks)."""
        from batchlabel.io.duplicates import find_duplicate

        written = {k: m for k, m in self.sink.committed.items() if m.file}
        found = find_duplicate(self.sink.output, self.sink.storage, list(written), sum(m.rows for m in written.values()))
        if found:
            value, first, second = found
            raise InputError(
                f"Duplicate id {value!r} in the input ({_location(self.plan, *first)} and {_location(self.plan, *second)}). "
                "Ids must be unique so that every row is labeled exactly once; the labeled shards are kept, but the "
                "run is not committed. Fix the input and run again with --restart."
            )


def _label_into_sink(spec: JobSpec, storage: StorageSettings, plan: InputPlan, sink: ShardSink, todo: set[str],
                     bar: RowProgress, verbose: bool) -> tuple[Finalizer, float | None, list[dict]]:
    """Read, label and commit the shards in ``todo`` on Ray; return the finalizer, the first commit time and the
    per-shard timeline."""
    import ray
    from ray.data import DataContext

    from batchlabel.io.datasink import make_datasink
    from batchlabel.io.datasource import shard_items
    from batchlabel.run.label_dataset import label_dataset
    from batchlabel.run.ray_runtime import WRITE_TASK_CPUS, ray_session

    with ray_session(spec.runtime, verbose=verbose):
        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = verbose
        context.execution_no_progress_timeout_s = spec.runtime.stall_timeout_s
        # the actors yield one table per shard; Ray joins outputs into a block until it passes this size and cuts
        # blocks of 1.5x it: above twice the biggest shard (labeled), no shard is ever cut
        # (docs/design.md, "Data path: block sizes that never cut a shard")
        context.target_max_block_size = max(1 << 20, int(2.2 * plan.max_shard_bytes))
        ledger = ray.remote(num_cpus=0)(CommitLedger).remote()
        finalizer = Finalizer(sink, plan, ledger)
        items = shard_items(plan, todo)
        dataset = ray.data.from_items(items, override_num_blocks=len(items))  # one shard descriptor per block
        dataset = label_dataset(dataset, spec, internal=True, storage=storage, ledger=ledger)
        stop = threading.Event()
        snapshot: dict = {}

        def poll() -> None:
            while not stop.wait(0.5):
                try:
                    snapshot.update(ray.get(ledger.snapshot.remote(), timeout=10))
                except Exception:  # the session is ending
                    return
                bar.update(snapshot["rows"], snapshot["tokens"])

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            sink_ = make_datasink(sink.output, storage, finalizer, ledger)
            dataset.write_datasink(sink_, ray_remote_args={"num_cpus": WRITE_TASK_CPUS})
        finally:
            stop.set()
            poller.join(timeout=15)
        first = ray.get(ledger.snapshot.remote())["first_commit_at"]
        return finalizer, first, ray.get(ledger.timeline.remote())


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
    started_at = time.time()  # the same moment on the clock the ledger stamps commits with
    preflight(spec, storage)
    plan = plan_input(spec.input, storage, spec.output.shard_rows)
    run_info = {
        "job": spec.name,
        "method": spec.method.name,
        "labels": spec.label_names,
        "spec_hash": spec.result_hash(),
        "plan": plan.fingerprint(),
        "planned_rows": plan.total_rows,
        "planned_rows_exact": plan.rows_exact,
        "planned_shards": len(plan.shards),
    }
    sink = ShardSink(output, storage, [s.key for s in plan.shards], run_info)
    committed = sink.open(restart=restart)
    todo = {s.key for s in plan.shards} - committed
    rows_todo = round(sum(s.rows or 0 for s in plan.shards if s.key in todo) * plan.keep_share)
    first_commit: float | None = None  # wall clock of the first commit: start-up vs steady state
    timeline: list[dict] = []
    manifest = read_manifest(output, storage) if not todo else None
    finalizer = Finalizer(sink, plan)
    if todo:
        with RowProgress(rows_todo, f"labeling {spec.name}", enabled=progress) as bar:
            try:
                finalizer, first_commit, timeline = _label_into_sink(spec, storage, plan, sink, todo, bar, verbose)
            except BatchlabelError:
                raise
            except Exception as err:  # Ray wraps everything; explain it in one paragraph
                raise _explain_failure(err) from None
        manifest = finalizer.manifest
    elif manifest is None:  # every shard committed, the manifest not yet written (a crash in between)
        finalizer([])
        manifest = finalizer.manifest
    rows_written = sum(m.rows for m in finalizer.new)
    wall = time.monotonic() - started
    cascade = spec.method.name == "cascade"  # per-stage report section (report/cascade.py)
    written = [m for m in sink.committed.values() if m.file]
    table = None
    if spec.eval.enabled or any(not m.fingerprints for m in written):
        # the report needs the rows; without it the markers say everything (nothing grows with rows in the driver)
        table = read_committed(output, storage, columns=REPORT_COLUMNS + (["labeled_by"] if cascade else []))
        all_fingerprints = sorted(set(table.column("labeler_fingerprint").to_pylist()) - {"", None})
    else:
        all_fingerprints = sorted({f for m in written for f in m.fingerprints} - {""})
    run = {
        "job": spec.name,
        "method": spec.method.name,
        "fingerprint": all_fingerprints[0] if len(all_fingerprints) == 1 else all_fingerprints,
        "wall_time_s": wall,
        "rows_labeled_this_run": rows_written,
        "rows_per_s": rows_written / wall if wall > 0 else 0.0,
        "shards_skipped_as_committed": len(committed),
        # engine.price (LLM methods) -> the report's cost (report.usage)
        "price": getattr(getattr(spec.method, "engine", None), "price", None) and spec.method.engine.price.model_dump(),
    }
    if cascade:
        run["cascade"] = [{"method": s.method.name, "min_confidence": s.min_confidence} for s in spec.method.stages]
    if first_commit is not None:
        # start-up = Ray start + actor start + model load + the first shard; steady = everything after it
        first_s = min(wall, max(0.0, first_commit - started_at))
        run["first_batch_s"] = first_s
        first_rows = min((m.rows for m in finalizer.new), default=0)
        steady_s, steady_rows = wall - first_s, rows_written - first_rows
        run["steady_rows_per_s"] = steady_rows / steady_s if steady_s > 0 and steady_rows > 0 else None
    if timeline:
        run["actors"] = actor_shares(timeline, started_at)
    report = build_report(table, spec.label_names, run) if spec.eval.enabled and table is not None else {}
    files: list[str] = []
    if spec.eval.enabled and write_report:
        files = writers.write_report(report, output, storage, writers.report_title(spec.name))
    return RunResult(output, manifest, report, files, rows_written, len(committed), wall, all_fingerprints, timeline)


def evaluate_output(output: str, storage: StorageSettings, labels: list[str] | None = None) -> tuple[dict, list[str]]:
    """Recompute the report of a committed output directory."""
    manifest = read_manifest(output, storage)
    if manifest is None:
        raise BatchlabelError(f"{output} holds no committed batchlabel run (no {MANIFEST}).")
    labels = labels or manifest["labels"]
    extra = ["labeled_by"] if manifest.get("method") == "cascade" else []
    table = read_committed(output, storage, columns=REPORT_COLUMNS + extra)
    report = build_report(table, labels, {"job": manifest.get("job"), "method": manifest.get("method")})
    files = writers.write_report(report, output, storage, writers.report_title(manifest.get("job", output)))
    return report, files
