"""`batchlabel nightly` and `batchlabel schedule`: incremental nightly labeling and the entry that runs it."""

from __future__ import annotations

import os
from typing import List, Optional

import typer

from batchlabel.cli.common import Quiet, Verbose, err, out, write_raw

PIPELINE_SET_HELP = "Override a pipeline field (e.g. --set output=s3://b/nightly) or, with a job. prefix, a job field."


def nightly(
    pipeline: str = typer.Argument(..., help="Pipeline spec (YAML), e.g. pipelines/nightly_news.yaml."),
    date: Optional[str] = typer.Option(None, "--date", help="The night's date YYYY-MM-DD (default: today)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=PIPELINE_SET_HELP),
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Incremental nightly labeling into ROOT/date=YYYY-MM-DD/ + gold evaluation + drift check.

    Exit status: 0 ok, 2 user error, 3 regression past the pipeline's drift thresholds.
    """
    from batchlabel.config.nightly import load_pipeline
    from batchlabel.nightly.night import EXIT_REGRESSION, run_night

    spec, job, _ = load_pipeline(pipeline, set_ or [])
    result = run_night(spec, job, date, progress=not quiet, verbose=verbose, log=lambda m: err.print(m, highlight=False))
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


def schedule(
    pipeline: str = typer.Argument(..., help="Pipeline spec (YAML)."),
    install: bool = typer.Option(False, "--install", help="Install the entry in your crontab (`crontab -`)."),
    rayjob: bool = typer.Option(False, "--rayjob", help="Print a KubeRay RayCronJob manifest (+ ConfigMap) instead."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Pipeline/job overrides, as for `nightly`."),
    workdir: Optional[str] = typer.Option(None, "--workdir", help="Directory cron runs in (default: the current one)."),
) -> None:
    """Print (or install) the crontab entry that runs `batchlabel nightly PIPELINE` on its schedule."""
    from batchlabel.config.nightly import load_pipeline
    from batchlabel.nightly import schedule as sch

    spec, _, job_raw = load_pipeline(pipeline, set_ or [])
    if rayjob:
        write_raw(sch.raycronjob_manifest(spec, job_raw))
        return
    entry = sch.crontab_entry(spec, pipeline, workdir or os.getcwd(), set_ or [])
    write_raw(entry)
    if install:
        sch.install_crontab(spec, entry)
        err.print("installed in your crontab (`crontab -l` shows it)")
