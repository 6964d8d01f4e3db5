"""`batchlabel submit` and `batchlabel jobs status|logs|stop|list`: jobs on a Ray cluster (Job Submission API).

The Ray job client is imported inside the commands (through batchlabel.cluster.submit).
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from batchlabel.cli.common import EXIT_JOB_FAILED, Address, Overrides, err, interrupt_hint, new_app, out, write_raw

STOPPED_WAITING = "stopped waiting; the job keeps running on the cluster (`batchlabel jobs stop ID` stops it)"

jobs_app = new_app("Inspect jobs submitted to a Ray cluster (status, logs, stop, list).")


def _finish(submission_id: str, final: str) -> None:
    """Print how a followed job ended; exit 1 unless it SUCCEEDED."""
    out.print(f"job {submission_id}: {final}", highlight=False)
    if final != "SUCCEEDED":
        raise typer.Exit(code=EXIT_JOB_FAILED)


def submit(
    job: str = typer.Argument(..., help="Job spec (YAML); validated here before it is sent."),
    address: Address = None,
    set_: Overrides = None,
    wait_: bool = typer.Option(False, "--wait", help="Stream status and logs until the job ends; exit 1 unless it SUCCEEDED."),
    submission_id: Optional[str] = typer.Option(None, "--id", help="Submission id (default: batchlabel-NAME-RANDOM)."),
    credentials: bool = typer.Option(
        True, "--credentials/--no-credentials",
        help="Pass AWS credentials from this environment as job env vars (off: the nodes' instance role is used).",
    ),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="With --wait: give up waiting after this many seconds."),
) -> None:
    """Submit a job to a Ray cluster (Ray Job Submission API); `batchlabel run` runs it there."""
    from batchlabel.cluster import submit as api

    submission = api.submit(job, address, set_ or [], submission_id, pass_credentials=credentials)
    for warning in submission.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    out.print(f"submitted {submission.submission_id} to {submission.address}", highlight=False)
    out.print(f"entrypoint: {submission.entrypoint}", highlight=False)
    out.print_json(json.dumps({"runtime_env": submission.runtime_env}))
    if not wait_:
        follow = f"batchlabel jobs logs {submission.submission_id} --follow --address {submission.address}"
        out.print(f"follow it with: {follow}", highlight=False)
        return
    with interrupt_hint(STOPPED_WAITING):
        final = api.wait(api.connect(address), submission.submission_id, write=write_raw, timeout_s=timeout)
    _finish(submission.submission_id, final)


@jobs_app.command("status")
def status(
    submission_id: str = typer.Argument(..., help="Submission id printed by `batchlabel submit`."),
    address: Address = None,
) -> None:
    """Print a job's status, message and timing (JSON)."""
    from batchlabel.cluster import submit as api

    out.print_json(json.dumps(api.status(api.connect(address), submission_id), default=str))


@jobs_app.command("logs")
def logs(
    submission_id: str = typer.Argument(..., help="Submission id."),
    address: Address = None,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the job ends; exit 1 unless it SUCCEEDED."),
) -> None:
    """Print a job's logs."""
    from batchlabel.cluster import submit as api

    client = api.connect(address)
    if not follow:
        write_raw(api.logs(client, submission_id))
        return
    _finish(submission_id, api.wait(client, submission_id, write=write_raw))


@jobs_app.command("stop")
def stop(
    submission_id: str = typer.Argument(..., help="Submission id."),
    address: Address = None,
) -> None:
    """Ask the cluster to stop a job (committed shards are kept; `batchlabel run` on the same output resumes)."""
    from batchlabel.cluster import submit as api

    stopped = api.stop(api.connect(address), submission_id)
    out.print(f"{submission_id}: {'stop requested' if stopped else 'already finished'}", highlight=False)


@jobs_app.command("list")
def list_jobs(address: Address = None) -> None:
    """List the cluster's jobs (id, status, batchlabel job name)."""
    from batchlabel.cluster import submit as api

    for info in sorted(api.connect(address).list_jobs(), key=lambda j: j.start_time or 0):
        name = (info.metadata or {}).get("batchlabel_job", "")
        write_raw(f"{info.submission_id or info.job_id}\t{getattr(info.status, 'value', info.status)}\t{name}\n")
