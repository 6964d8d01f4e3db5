"""CLI commands for clusters and schedules: `submit`, `jobs status|logs|stop|list`, `nightly`, `schedule`.

cli.py registers them; heavy modules (ray, torch) are imported inside the commands.
"""

from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

import typer
from rich.console import Console

from batchlabel.errors import BatchlabelError

out = Console()
err = Console(stderr=True)

SET_HELP = "Override a spec field, e.g. --set output.path=s3://bucket/run1 (repeatable)."
ADDRESS_HELP = "Ray job API address, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS)."
EXIT_JOB_FAILED = 1

jobs_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Inspect jobs submitted to a Ray cluster (status, logs, stop, list).",
)


def _fail(error: BaseException) -> None:
    err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _write_raw(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def submit_command(
    job: str = typer.Argument(..., help="Job spec (YAML); validated here before it is sent."),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    wait_: bool = typer.Option(False, "--wait", help="Stream status and logs until the job ends; exit 1 unless it SUCCEEDED."),
    submission_id: Optional[str] = typer.Option(None, "--id", help="Submission id (default: batchlabel-NAME-RANDOM)."),
    credentials: bool = typer.Option(
        True, "--credentials/--no-credentials",
        help="Pass AWS credentials from this environment as job env vars (off: the nodes' instance role is used).",
    ),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="With --wait: give up waiting after this many seconds."),
) -> None:
    """Submit a job to a Ray cluster (Ray Job Submission API); `batchlabel run` runs it there."""
    from batchlabel import submit as sub

    try:
        submission = sub.submit(job, address, set_ or [], submission_id, pass_credentials=credentials)
        for warning in submission.warnings:
            err.print(f"[yellow]warning:[/] {warning}", highlight=False)
        out.print(f"submitted {submission.submission_id} to {submission.address}", highlight=False)
        out.print(f"entrypoint: {submission.entrypoint}", highlight=False)
        out.print_json(json.dumps({"runtime_env": submission.runtime_env}))
        if not wait_:
            out.print(f"follow it with: batchlabel jobs logs {submission.submission_id} --follow --address {submission.address}", highlight=False)
            return
        final = sub.wait(sub.connect(address), submission.submission_id, write=_write_raw, timeout_s=timeout)
    except BatchlabelError as error:
        _fail(error)
        return
    except KeyboardInterrupt:
        err.print("stopped waiting; the job keeps running on the cluster (`batchlabel jobs stop ID` stops it)")
        raise typer.Exit(code=130)
    out.print(f"job {submission.submission_id}: {final}", highlight=False)
    if final != "SUCCEEDED":
        raise typer.Exit(code=EXIT_JOB_FAILED)


@jobs_app.command("status")
def jobs_status(
    submission_id: str = typer.Argument(..., help="Submission id printed by `batchlabel submit`."),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
) -> None:
    """Print a job's status, message and timing (JSON)."""
    from batchlabel import submit as sub

    try:
        info = sub.status(sub.connect(address), submission_id)
    except BatchlabelError as error:
        _fail(error)
        return
    out.print_json(json.dumps(info, default=str))


@jobs_app.command("logs")
def jobs_logs(
    submission_id: str = typer.Argument(..., help="Submission id."),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the job ends; exit 1 unless it SUCCEEDED."),
) -> None:
    """Print a job's logs."""
    from batchlabel import submit as sub

    try:
        client = sub.connect(address)
        if not follow:
            _write_raw(sub.logs(client, submission_id))
            return
        final = sub.wait(client, submission_id, write=_write_raw)
    except BatchlabelError as error:
        _fail(error)
        return
    except KeyboardInterrupt:
        raise typer.Exit(code=130)
    out.print(f"job {submission_id}: {final}", highlight=False)
    if final != "SUCCEEDED":
        raise typer.Exit(code=EXIT_JOB_FAILED)


@jobs_app.command("stop")
def jobs_stop(
    submission_id: str = typer.Argument(..., help="Submission id."),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
) -> None:
    """Ask the cluster to stop a job (committed shards are kept; `batchlabel run` on the same output resumes)."""
    from batchlabel import submit as sub

    try:
        stopped = sub.stop(sub.connect(address), submission_id)
    except BatchlabelError as error:
        _fail(error)
        return
    out.print(f"{submission_id}: {'stop requested' if stopped else 'already finished'}", highlight=False)


@jobs_app.command("list")
def jobs_list(address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP)) -> None:
    """List the cluster's jobs (id, status, batchlabel job name)."""
    from batchlabel import submit as sub

    try:
        client = sub.connect(address)
        jobs = client.list_jobs()
    except BatchlabelError as error:
        _fail(error)
        return
    for info in sorted(jobs, key=lambda j: j.start_time or 0):
        name = (info.metadata or {}).get("batchlabel_job", "")
        _write_raw(f"{info.submission_id or info.job_id}\t{getattr(info.status, 'value', info.status)}\t{name}\n")


def nightly_command(
    pipeline: str = typer.Argument(..., help="Pipeline spec (YAML), e.g. pipelines/nightly_news.yaml."),
    date: Optional[str] = typer.Option(None, "--date", help="The night's date YYYY-MM-DD (default: today)."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", help="Override a pipeline field (e.g. --set output=s3://b/nightly) or, with a job. prefix, a job field."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Ray's logs."),
) -> None:
    """Incremental nightly labeling into ROOT/date=YYYY-MM-DD/ + gold evaluation + drift check.

    Exit status: 0 ok, 2 user error, 3 regression past the pipeline's drift thresholds.
    """
    from batchlabel.nightly import EXIT_REGRESSION, run_night
    from batchlabel.pipeline_spec import load_pipeline

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        spec, job, _ = load_pipeline(pipeline, set_ or [])
        result = run_night(spec, job, date, progress=not quiet, verbose=verbose, log=lambda m: err.print(m, highlight=False))
    except BatchlabelError as error:
        _fail(error)
        return
    counts = result.counts
    out.print(
        f"night {result.date}: {counts['relabel']} of {counts['corpus']} rows re-labeled (new {counts['new']}, changed "
        f"{counts['changed_text']}, new fingerprint {counts['fingerprint']}, earlier errors {counts['error']}; "
        f"removed {counts['removed']}) into {result.partition}",
        highlight=False,
    )
    gold = result.drift.get("gold")
    if gold:
        out.print(f"gold sample: accuracy {gold['accuracy']:.4f}   macro-F1 {gold['macro_f1']:.4f}", highlight=False)
    if "label_shift_tvd" in result.drift:
        out.print(f"label distribution shift vs {result.drift['previous_date']}: {result.drift['label_shift_tvd']:.4f}", highlight=False)
    out.print(f"drift report: {result.partition}/drift.md  status: {result.drift['status']}", highlight=False)
    for violation in result.drift["violations"]:
        err.print(f"[bold red]regression:[/] {violation}", highlight=False)
    if result.regression:
        raise typer.Exit(code=EXIT_REGRESSION)


def schedule_command(
    pipeline: str = typer.Argument(..., help="Pipeline spec (YAML)."),
    install: bool = typer.Option(False, "--install", help="Install the entry in your crontab (`crontab -`)."),
    rayjob: bool = typer.Option(False, "--rayjob", help="Print a KubeRay RayCronJob manifest (+ ConfigMap) instead."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Pipeline/job overrides, as for `nightly`."),
    workdir: Optional[str] = typer.Option(None, "--workdir", help="Directory cron runs in (default: the current one)."),
) -> None:
    """Print (or install) the crontab entry that runs `batchlabel nightly PIPELINE` on its schedule."""
    from batchlabel.pipeline_spec import load_pipeline
    from batchlabel import schedule as sch

    try:
        spec, _, job_raw = load_pipeline(pipeline, set_ or [])
        if rayjob:
            _write_raw(sch.raycronjob_manifest(spec, job_raw))
            return
        entry = sch.crontab_entry(spec, pipeline, workdir or os.getcwd(), set_ or [])
        _write_raw(entry)
        if install:
            sch.install_crontab(spec, entry)
            err.print("installed in your crontab (`crontab -l` shows it)")
    except BatchlabelError as error:
        _fail(error)
