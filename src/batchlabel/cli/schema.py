"""`batchlabel schema [SECTION]`: every spec field with its type, constraints, default and description.

Read from the Pydantic models themselves (batchlabel.config.fields), so it cannot fall behind them; a spec
error that names an unknown field points here.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Optional

import typer

from batchlabel.cli.common import write_raw


def schema(
    section: Optional[str] = typer.Argument(
        None,
        help="A section or field path as a spec or an error names it: runtime, method.prompt.engine.vllm, "
        "train.lora, labels, pipeline, pipeline.drift, runtime.actors (default: every job and pipeline field).",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per field (path, model, type, default...)."),
) -> None:
    """Print the fields of the job spec (and of nightly pipelines): type, constraints, default, description."""
    from batchlabel.config.fields import render, resolve, sections

    if section:
        found, field = resolve(section)
    else:
        found, field = sections(), None
    rows = [field] if field is not None else [row for s in found for row in s.fields]
    if as_json:
        items = [{**asdict(row), "model": row.model.__name__, "see": list(row.see)} for row in rows]
        write_raw(json.dumps(items, indent=1) + "\n")
    elif field is not None:
        write_raw(field.line() + "\n")
    else:
        write_raw(render(found))
