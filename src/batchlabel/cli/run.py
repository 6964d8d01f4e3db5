"""`batchlabel run`, `train` and `eval`: label, train and evaluate on this machine (its own local Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from batchlabel.cli.common import Overrides, Quiet, Verbose, err, interrupt_hint, out

RUN_INTERRUPTED = "interrupted: committed shards are kept; run the same command to resume"


def _run_phases(spec) -> tuple[str, ...]:
    """What `run` may do: label, and train first when train.inline asks for it and no local model is there yet
    (an s3:// train.output counts as not there: checking it would cost a request before the run starts)."""
    if spec.train is None or not spec.train.inline:
        return ("label",)
    trained = "://" not in spec.train.output and Path(spec.train.output).exists()
    return ("label",) if trained else ("label", "train")


def _load_job(job: str, overrides: list[str] | None):
    from batchlabel.config import load_job

    return load_job(job, overrides or [])


def run(
    job: str = typer.Argument(..., help="Job spec (YAML)."),
    set_: Overrides = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the spec and print the plan; label nothing."),
    restart: bool = typer.Option(False, "--restart", help="Discard what a previous run wrote to the output."),
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Label a corpus as the job spec says; resume if the output holds an unfinished run."""
    from batchlabel.cli.extras import check_installed, missing_extras

    spec = _load_job(job, set_)
    if dry_run:
        _print_plan(spec)
        problem = missing_extras(spec, _run_phases(spec))
        if problem:  # the plan needs no extra; say what a real run would miss
            err.print(f"[yellow]warning:[/] {job} {problem}", highlight=False, soft_wrap=True)
        return
    check_installed(spec, job, _run_phases(spec))
    with interrupt_hint(RUN_INTERRUPTED):
        from batchlabel.run.pipeline import run_job

        result = run_job(spec, restart=restart, progress=not quiet, verbose=verbose)
    _print_result(result)


def _print_plan(spec) -> None:
    from batchlabel.io.sink import STATE_DIR
    from batchlabel.io.source import plan_input
    from batchlabel.io.storage import StorageSettings, join

    storage = StorageSettings.from_spec(spec.storage)
    plan = plan_input(spec.input, storage, spec.output.shard_rows)
    done = len(storage.list_files(join(spec.output.path, STATE_DIR, "shards")))
    summary = {
        "job": spec.name,
        "method": spec.method.model_dump(),
        "labels": spec.label_names,
        "input": {"path": spec.input.path, "files": len(plan.files), "rows": plan.total_rows, "shards": len(plan.shards)},
        "train": spec.train.model_dump() if spec.train else None,
        "runtime": spec.runtime.model_dump(),
        "output": {"path": spec.output.path, "committed_shards": done},
        "spec_hash": spec.result_hash(),
    }
    out.print_json(json.dumps(summary))
    out.print("spec is valid; nothing was labeled (--dry-run)")


def _scores(metrics: dict) -> str:
    return f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}"


def _print_result(result) -> None:
    metrics = result.report.get("metrics") if result.report else None
    out.print(f"labeled output: {result.output}  ({result.manifest['rows']} rows, {result.manifest['error_rows']} errors)")
    if result.skipped_shards:
        out.print(f"resumed: {result.skipped_shards} shard(s) were already committed and skipped")
    out.print(
        f"this run labeled {result.rows_labeled_this_run} rows in {result.wall_time_s:.1f} s "
        f"({result.report.get('run', {}).get('rows_per_s', 0):.1f} rows/s)"
    )
    if metrics:
        out.print(f"{_scores(metrics)}   (on {metrics['rows']} gold rows)")
    for url in result.report_files:
        if url.endswith(("report.md", "report.html", "report.json")):
            out.print(f"report: {url}")


def train(
    job: str = typer.Argument(..., help="Job spec with a train section."),
    set_: Overrides = None,
    quiet: Quiet = False,
) -> None:
    """Train the model the job labels with (writes it to train.output)."""
    from batchlabel.cli.extras import check_installed

    spec = _load_job(job, set_)
    check_installed(spec, job, ("train",))
    from batchlabel.training.base import train_model

    result = train_model(spec, progress=not quiet)
    out.print(f"trained model: {result.output}  ({result.rows} rows, {result.wall_time_s:.1f} s)")
    if result.validation:
        out.print(f"validation {_scores(result.validation)}")


def evaluate(
    output: str = typer.Argument(..., help="Output directory of a committed run (local or s3://)."),
    endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint (default: $AWS_ENDPOINT_URL)."),
) -> None:
    """Recompute the report (metrics, confusion matrix) from labeled output."""
    from batchlabel.io.storage import StorageSettings
    from batchlabel.run.pipeline import evaluate_output

    report, files = evaluate_output(output, StorageSettings(endpoint_url=endpoint_url))
    metrics = report.get("metrics")
    out.print(f"{report['rows']} rows, {report['error_rows']} errors")
    if metrics:
        out.print(_scores(metrics))
    for url in files:
        out.print(f"wrote {url}")
