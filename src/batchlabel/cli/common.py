"""What every `batchlabel` command shares: the consoles, option help, library quieting, exit codes and
the one error handler.

Commands raise; they do not print errors. `BatchlabelGroup.invoke` runs every command (however the app
is invoked: the console script, ``python -m batchlabel.cli``, ``app(...)`` or typer's ``CliRunner``)
with quiet libraries and under `handle_errors`:

- `BatchlabelError` -> ``error: <message>`` on stderr, exit 2, no traceback;
- Ctrl-C (`KeyboardInterrupt`) -> exit 130, printing the hint of the `interrupt_hint` block it hit, if any.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Annotated, Any, Iterator, List, MutableMapping, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from batchlabel.errors import BatchlabelError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# exit codes besides 0 (ok) and 3 (a nightly regression: batchlabel.nightly.night.EXIT_REGRESSION)
EXIT_JOB_FAILED = 1  # a submitted job ended other than SUCCEEDED
EXIT_USER_ERROR = 2  # a BatchlabelError: bad spec, missing file, unreachable cluster...
EXIT_INTERRUPTED = 130  # Ctrl-C

SET_HELP = "Override a spec field, e.g. --set output.path=s3://bucket/run1 (repeatable)."
ADDRESS_HELP = "Ray job API address, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS)."

# options several commands take, with the same flags and help
Overrides = Annotated[Optional[List[str]], typer.Option("--set", help=SET_HELP)]
Address = Annotated[Optional[str], typer.Option("--address", help=ADDRESS_HELP)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show Ray's logs.")]

# set (unless the user set them) before any command imports transformers, tokenizers, huggingface_hub or ray
QUIET_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "RAY_DEDUP_LOGS": "1",
}


def quiet_libraries(environ: MutableMapping[str, str] = os.environ) -> None:
    for name, value in QUIET_ENV.items():
        environ.setdefault(name, value)


def write_raw(text: str) -> None:
    """Write text (logs, crontab lines, manifests) to stdout exactly as it is: no markup, no wrapping."""
    sys.stdout.write(text)
    sys.stdout.flush()


def print_error(error: BaseException) -> None:
    err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that carries what the user should know (printed by `handle_errors`)."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


@contextmanager
def interrupt_hint(hint: str) -> Iterator[None]:
    """A Ctrl-C inside the block exits 130 with ``hint`` on stderr."""
    try:
        yield
    except Interrupted:
        raise  # an inner block's hint is the more precise one
    except KeyboardInterrupt as interrupt:
        raise Interrupted(hint) from interrupt


@contextmanager
def handle_errors() -> Iterator[None]:
    """The one place user errors and Ctrl-C become exit codes."""
    try:
        yield
    except BatchlabelError as error:
        print_error(error)
        raise typer.Exit(code=EXIT_USER_ERROR) from None
    except KeyboardInterrupt as interrupt:
        hint = getattr(interrupt, "hint", None)
        if hint:
            err.print(hint, highlight=False)
        raise typer.Exit(code=EXIT_INTERRUPTED) from None


class BatchlabelGroup(TyperGroup):
    """The root command group: runs every sub-command with quiet libraries, under `handle_errors`."""

    def invoke(self, ctx: typer.Context) -> Any:
        quiet_libraries()
        with handle_errors():
            return super().invoke(ctx)


def new_app(help: str, **settings: Any) -> typer.Typer:
    """A command group with the settings all of batchlabel's share."""
    return typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=help, **settings)
