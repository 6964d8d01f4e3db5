"""The report files: report.json, report.md, report.html and the confusion-matrix PNG next to an output."""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

from batchlabel.io.storage import StorageSettings, join
from batchlabel.report.pictures import confusion_png


def report_title(name: str) -> str:
    """The title of the report of the job (or output) ``name``."""
    return f"batchlabel report: {name}"


def render_markdown(report: dict[str, Any], title: str) -> str:
    """The report as Markdown: counts, run speed, metrics vs gold, label distribution, error reasons."""
    run = report.get("run", {})
    lines = [f"# {title}", ""]
    lines += [
        f"- rows: {report['rows']} (labeled {report['labeled_rows']}, errors {report['error_rows']}, truncated {report['truncated_rows']})",
    ]
    if run.get("wall_time_s") is not None:
        lines.append(f"- wall time: {run['wall_time_s']:.1f} s, {run.get('rows_per_s', 0):.1f} rows/s ({run.get('rows_labeled_this_run', 0)} rows labeled by this run)")
    if run.get("steady_rows_per_s"):
        lines.append(f"- start-up (Ray, actors, model load, first batch): {run['first_batch_s']:.1f} s; "
                     f"steady state after it: {run['steady_rows_per_s']:.1f} rows/s")
    if run.get("fingerprint"):
        lines.append(f"- labeler fingerprint: `{run['fingerprint']}`")
    metrics = report.get("metrics")
    if metrics:
        lines += [
            f"- accuracy: **{metrics['accuracy']:.4f}**, macro-F1: **{metrics['macro_f1']:.4f}**, weighted-F1: {metrics['weighted_f1']:.4f} (on {metrics['rows']} gold rows)",
            "",
            "| label | precision | recall | F1 | support |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, m in metrics["per_class"].items():
            lines.append(f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
        lines += ["", "![confusion matrix](confusion_matrix.png)"]
    else:
        lines.append("- no gold labels: metrics not computed")
    if report["gold_outside_label_set"]["rows"]:
        g = report["gold_outside_label_set"]
        lines.append(f"- {g['rows']} gold labels outside the label set were excluded (e.g. {', '.join(g['examples'])})")
    lines += ["", "## Label distribution", "", "| label | rows |", "|---|---:|"]
    lines += [f"| {label} | {count} |" for label, count in report["label_distribution"].items()]
    if report["error_reasons"]:
        lines += ["", "## Error reasons", "", "| reason | rows |", "|---|---:|"]
        lines += [f"| {reason} | {count} |" for reason, count in report["error_reasons"].items()]
    return "\n".join(lines) + "\n"


def render_html(markdown: str, title: str) -> str:
    """A plain HTML page of the Markdown report (headings, the confusion-matrix picture, other lines as-is)."""
    body = []
    for line in markdown.splitlines():
        if line.startswith("![confusion matrix]"):
            body.append('<img src="confusion_matrix.png" alt="confusion matrix">')
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.strip():
            body.append(f"<pre>{html.escape(line)}</pre>")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>{''.join(body)}</body></html>\n"


def write_report(
    report: dict[str, Any], output: str, storage: StorageSettings, title: str, sections: Sequence[str] = ()
) -> list[str]:
    """Write report.json/.md/.html (+ PNG when there are metrics) into ``output``; return the URLs written.

    ``sections``: extra Markdown sections (e.g. the nightly drift section), appended in order to report.md
    and rendered into report.html; the data behind them belongs in ``report`` under their own keys.
    """
    written = []
    if report.get("metrics"):
        storage.write_bytes(join(output, "confusion_matrix.png"), confusion_png(report["metrics"]))
        written.append(join(output, "confusion_matrix.png"))
    markdown = render_markdown(report, title)
    for section in sections:
        markdown = markdown.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    for name, data in (
        ("report.json", json.dumps(report, indent=2).encode()),
        ("report.md", markdown.encode()),
        ("report.html", render_html(markdown, title).encode()),
    ):
        storage.write_bytes(join(output, name), data)
        written.append(join(output, name))
    return written
