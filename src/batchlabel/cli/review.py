"""`batchlabel review export|import`: send low-confidence rows to people, read their labels back as gold."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from batchlabel.cli.common import err, new_app, out, write_raw

app = new_app("Human review: export uncertain rows (Label Studio / CSV), import the reviewed labels as gold.")

ENDPOINT_HELP = "S3 endpoint (default: $AWS_ENDPOINT_URL)."


@app.command("export")
def export(
    output: str = typer.Argument(..., help="Output directory of a committed run (local or s3://)."),
    below: float = typer.Option(..., "--below", help="Export the rows with confidence below this threshold."),
    out_file: str = typer.Option(..., "--out", help="File to write (local or s3://)."),
    fmt: str = typer.Option("label-studio", "--format", help="label-studio (JSON tasks with predictions) or csv."),
    sample_above: int = typer.Option(0, "--sample-above", min=0, help="Also export N random rows at or above the threshold (audit sample)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the audit sample."),
    input_path: Optional[str] = typer.Option(None, "--input", help="The job's input, to read texts from when the output has none (output.keep_text: false)."),
    input_format: str = typer.Option("auto", "--input-format", help="Format of --input: auto, parquet, csv, jsonl."),
    id_column: str = typer.Option("id", "--id-column", help="Id column of --input."),
    text_column: str = typer.Option("text", "--text-column", help="Text column of --input."),
    endpoint_url: Optional[str] = typer.Option(None, help=ENDPOINT_HELP),
) -> None:
    """Write the rows below a confidence threshold (+ an audit sample) for review."""
    from batchlabel.io.storage import StorageSettings
    from batchlabel.review.export import export_review
    from batchlabel.review.labelstudio import labeling_config

    input_spec = None
    if input_path:
        from batchlabel.config import InputSpec

        input_spec = InputSpec(path=input_path, format=input_format, id_column=id_column, text_column=text_column)
    summary = export_review(output, StorageSettings(endpoint_url=endpoint_url), below, out_file, fmt,
                            sample_above=sample_above, seed=seed, input_spec=input_spec)
    out.print(
        f"exported {summary['exported']} rows to {out_file}: {summary['low_confidence']} with confidence < {below}, "
        f"{summary['audit']} audit rows of {summary['confident_rows']} at or above it "
        f"({summary['error_rows_not_exported']} error rows not exported; texts from the {summary['texts_from']})",
        highlight=False, markup=False,
    )
    if summary["missing_texts"]["rows"]:
        err.print(f"warning: {summary['missing_texts']['rows']} rows had no text in the input and were left out "
                  f"(e.g. {summary['missing_texts']['examples'][:3]})", highlight=False, markup=False)
    if summary["changed_texts"]:
        err.print(f"warning: {summary['changed_texts']} input texts changed since they were labeled", highlight=False, markup=False)
    if fmt == "label-studio":
        out.print("Label Studio labeling config for these tasks:", highlight=False, markup=False)
        out.print(labeling_config(summary["labels"]), highlight=False, markup=False)


@app.command("import")
def import_(
    reviewed: str = typer.Argument(..., help="Reviewed file: a Label Studio JSON export or the review CSV."),
    into: str = typer.Option(..., "--into", help="Gold Parquet to write or merge into (id, text, gold)."),
    labels: Optional[List[str]] = typer.Option(None, "--labels", help="Label set (comma-separated or repeated; default: the source output's)."),
    output: Optional[str] = typer.Option(None, "--output", help="The labeled output the rows were exported from (default: the one recorded in the file)."),
    strict: bool = typer.Option(False, "--strict", help="Fail (write nothing) on an unknown label or id instead of skipping it."),
    endpoint_url: Optional[str] = typer.Option(None, help=ENDPOINT_HELP),
) -> None:
    """Read reviewed labels into a gold Parquet usable by eval, train and the nightly gold sample."""
    from batchlabel.io.storage import StorageSettings
    from batchlabel.review.ingest import import_review

    names = [name.strip() for item in labels or [] for name in item.split(",") if name.strip()] or None
    summary = import_review(reviewed, into, StorageSettings(endpoint_url=endpoint_url), names, output, strict)
    out.print(
        f"imported {summary['imported']} reviewed rows into {into} ({summary['added']} added, {summary['replaced']} "
        f"replaced; {summary['gold_rows']} gold rows now); {summary['unreviewed']} of {summary['tasks']} not reviewed",
        highlight=False, markup=False,
    )
    for key, what in (("unknown_labels", "a label outside the label set"), ("unknown_ids", "an id the output does not hold"),
                      ("missing_text", "no text")):
        if summary[key]["rows"]:
            err.print(f"warning: skipped {summary[key]['rows']} rows with {what} (e.g. {summary[key]['examples'][:5]})",
                      highlight=False, markup=False)
    if not summary["ids_checked"]:
        err.print("warning: ids not checked (the source output is not readable)", highlight=False, markup=False)
    write_raw(json.dumps({k: summary[k] for k in ("unknown_labels", "unknown_ids", "duplicate_ids", "agreement")}) + "\n")
