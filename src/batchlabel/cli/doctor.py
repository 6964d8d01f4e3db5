"""`batchlabel doctor [JOB]`: which extras and imported models are here, and what a job needs of them.

Exit status 0 when everything the job needs is installed (or no job was given), 1 when something is missing:
the last line then is the command that installs it.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Optional

import typer

from batchlabel.cli.common import EXIT_JOB_FAILED, Overrides, write_raw


def _extras_lines() -> list[str]:
    from batchlabel.cli.extras import extra_packages, install_command, missing_packages

    lines = [f"extras (add any with: {install_command(['EXTRA'])}):"]
    for extra, packages in extra_packages().items():
        missing = missing_packages(packages)
        state = "installed" if not missing else f"not installed (missing: {', '.join(missing[:3])}" + (
            f" and {len(missing) - 3} more)" if len(missing) > 3 else ")"
        )
        lines.append(f"  {extra:<10} {state}")
    return lines


def _models_lines() -> list[str]:
    from batchlabel.models.gguf import MODELS

    lines = ["models (`batchlabel models import-gguf NAME` writes models/NAME, relative to this directory):"]
    for name, model in MODELS.items():
        path = Path("models") / name
        state = "imported" if (path / "config.json").is_file() else "not imported"
        lines.append(f"  {name:<20} {state:<13} {model.note}")
    return lines


def _job_lines(job: str, overrides: list[str]) -> tuple[list[str], list[str]]:
    """(lines about the job, the commands that would make it runnable here)."""
    from batchlabel.cli.extras import declared_extras, install_command, job_needs, wanted_extras
    from batchlabel.config import load_job

    needs = job_needs(load_job(job, overrides))
    lines = [f"{job} needs:" if needs else f"{job} needs no extra (the base install runs it)."]
    missing, imports = [], []
    for need in needs:
        extra = need.extras[0] + (f" (or {', '.join(need.extras[1:])})" if len(need.extras) > 1 else "")
        ok = need.installed() or need.model_present()
        lines.append(f"  {need.phase:<6} {extra:<22} {'installed' if ok else 'MISSING':<10} {need.why}{need.build_note()}")
        missing += [] if ok else [need]
        if need.phase == "model" and not need.model_present():
            imports.append(f"batchlabel models import-gguf {Path(need.model or '').name}")
            lines.append(f"  {'':<40} {need.model} is not there yet: {imports[-1]}")
    declared = declared_extras(job)
    if declared is None:
        lines.append(f"  (its first line names no extras; the convention: `# extras: {', '.join(wanted_extras(needs)) or 'none'}`)")
    else:
        undeclared = [n.extras[0] for n in needs if not any(alt in declared for alt in n.extras)]
        note = f"lacks {', '.join(dict.fromkeys(undeclared))}" if undeclared else "agrees with the spec"
        lines.append(f"  its first line declares: {', '.join(declared) or 'none'} ({note})")
    todo = [install_command(wanted_extras(missing))] if missing else []
    return lines, todo + list(dict.fromkeys(imports))


def doctor(
    job: Optional[str] = typer.Argument(None, help="A job spec: also say what it needs and whether that is here."),
    set_: Overrides = None,
) -> None:
    """Say which optional extras and imported models are installed, and what a job needs of them."""
    from batchlabel import __version__

    lines = [f"batchlabel {__version__}, Python {platform.python_version()} ({sys.executable})"]
    lines += _extras_lines() + _models_lines()
    todo: list[str] = []
    if job:
        job_lines, todo = _job_lines(job, set_ or [])
        lines += job_lines
        lines.append(f"to run it here: {' && '.join(todo)}" if todo else "everything this job needs is here")
    write_raw("\n".join(lines) + "\n")
    if todo:
        raise typer.Exit(code=EXIT_JOB_FAILED)
