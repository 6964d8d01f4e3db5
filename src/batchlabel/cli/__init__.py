"""The `batchlabel` command line: `app` (the typer app) and `main` (the console script).

Each command group lives in its own module; `COMMANDS` below is the one table that registers them.
What they share (consoles, option help, quiet libraries, the one error handler) is cli/common.py.
Heavy modules (ray, torch, transformers) are imported inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

from typing import Callable, Union

import typer

from batchlabel.cli import cluster, doctor, init, models, nightly, review, run, schema
from batchlabel.cli.common import BatchlabelGroup, new_app

app = new_app("batchlabel: label large text corpora with Ray (embed, prompt, score, classifier).", cls=BatchlabelGroup)

# name -> a command (function) or a command group (typer app); `--help` lists commands first, then groups
COMMANDS: dict[str, Union[Callable[..., None], typer.Typer]] = {
    "run": run.run,
    "train": run.train,
    "eval": run.evaluate,
    "init": init.init,
    "schema": schema.schema,
    "doctor": doctor.doctor,
    "submit": cluster.submit,
    "jobs": cluster.jobs_app,
    "nightly": nightly.nightly,
    "schedule": nightly.schedule,
    "models": models.app,
    "review": review.app,
}


def _register(root: typer.Typer, table: dict[str, Union[Callable[..., None], typer.Typer]]) -> None:
    for name, target in table.items():
        if isinstance(target, typer.Typer):
            root.add_typer(target, name=name)
        else:
            root.command(name=name)(target)


_register(app, COMMANDS)


def main() -> None:
    """The console script `batchlabel` (and `python -m batchlabel.cli`); exit codes: cli/common.py."""
    app()


__all__ = ["COMMANDS", "app", "main"]
