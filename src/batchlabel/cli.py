"""The `batchlabel` command line. Heavy modules (ray, torch) are imported inside commands."""

from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

import typer
from rich.console import Console

from batchlabel.errors import BatchlabelError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="batchlabel: label large text corpora with Ray (embed, prompt, score, classifier).",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

SET_HELP = "Override a spec field, e.g. --set output.path=s3://bucket/run1 (repeatable)."


def _fail(error: BaseException) -> None:
    err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")


def _load(job: str, overrides: list[str] | None):
    from batchlabel.spec import load_job

    return load_job(job, overrides or [])


@app.command()
def run(
    job: str = typer.Argument(..., help="Job spec (YAML)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the spec and print the plan; label nothing."),
    restart: bool = typer.Option(False, "--restart", help="Discard what a previous run wrote to the output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Ray's logs."),
) -> None:
    """Label a corpus as the job spec says; resume if the output holds an unfinished run."""
    _quiet_libraries()
    try:
        spec = _load(job, set_)
        if dry_run:
            _print_plan(spec)
            return
        from batchlabel.pipeline import run_job

        result = run_job(spec, restart=restart, progress=not quiet, verbose=verbose)
    except BatchlabelError as error:
        _fail(error)
        return
    except KeyboardInterrupt:
        err.print("interrupted: committed shards are kept; run the same command to resume")
        raise typer.Exit(code=130)
    _print_result(result)


def _print_plan(spec) -> None:
    from batchlabel.sink import STATE_DIR
    from batchlabel.source import plan_input
    from batchlabel.storage import StorageSettings, join

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
        out.print(f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   (on {metrics['rows']} gold rows)")
    for url in result.report_files:
        if url.endswith(("report.md", "report.html", "report.json")):
            out.print(f"report: {url}")


@app.command()
def train(
    job: str = typer.Argument(..., help="Job spec with a train section."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Train the model the job labels with (writes it to train.output)."""
    _quiet_libraries()
    try:
        spec = _load(job, set_)
        from batchlabel.train import train_model

        result = train_model(spec, progress=not quiet)
    except BatchlabelError as error:
        _fail(error)
        return
    out.print(f"trained model: {result.output}  ({result.rows} rows, {result.wall_time_s:.1f} s)")
    if result.validation:
        out.print(f"validation accuracy {result.validation['accuracy']:.4f}   macro-F1 {result.validation['macro_f1']:.4f}")


@app.command(name="eval")
def eval_(
    output: str = typer.Argument(..., help="Output directory of a committed run (local or s3://)."),
    endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint (default: $AWS_ENDPOINT_URL)."),
) -> None:
    """Recompute the report (metrics, confusion matrix) from labeled output."""
    try:
        from batchlabel.pipeline import evaluate_output
        from batchlabel.storage import StorageSettings

        report, files = evaluate_output(output, StorageSettings(endpoint_url=endpoint_url))
    except BatchlabelError as error:
        _fail(error)
        return
    metrics = report.get("metrics")
    out.print(f"{report['rows']} rows, {report['error_rows']} errors")
    if metrics:
        out.print(f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}")
    for url in files:
        out.print(f"wrote {url}")


def _register_cluster_commands() -> None:
    from batchlabel import jobs_cli

    app.command(name="submit")(jobs_cli.submit_command)
    app.add_typer(jobs_cli.jobs_app, name="jobs")
    app.command(name="nightly")(jobs_cli.nightly_command)
    app.command(name="schedule")(jobs_cli.schedule_command)


_register_cluster_commands()


def _register_model_commands() -> None:
    from batchlabel import models_import

    app.add_typer(models_import.app, name="models")


_register_model_commands()


def main() -> None:
    try:
        app()
    except BatchlabelError as error:  # pragma: no cover - commands catch their own
        err.print(f"error: {error}")
        sys.exit(2)


if __name__ == "__main__":
    main()
