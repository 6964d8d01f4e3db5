"""The report files next to an output: report.json, report.md, report.html and the PNG pictures.

report.md references the pictures as files next to it; report.html inlines them (one self-contained file).
Everything goes through the storage layer (local or s3://).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from batchlabel.io.storage import StorageSettings, join
from batchlabel.report import markdown as md
from batchlabel.report.html import markdown_to_html
from batchlabel.report.pictures import confusion_png, coverage_png, reliability_png


def report_title(name: str) -> str:
    """The title of the report of the job (or output) ``name``."""
    return f"batchlabel report: {name}"


def report_pictures(report: dict[str, Any]) -> dict[str, bytes]:
    """File name -> PNG bytes of the report's pictures (none without gold metrics)."""
    pictures = {}
    if report.get("metrics"):
        pictures[md.CONFUSION_PNG] = confusion_png(report["metrics"])
    if report.get("calibration", {}).get("rows"):
        pictures[md.RELIABILITY_PNG] = reliability_png(report["calibration"])
        pictures[md.COVERAGE_PNG] = coverage_png(report["calibration"])
    return pictures


def write_report(
    report: dict[str, Any], output: str, storage: StorageSettings, title: str, sections: Sequence[str] = ()
) -> list[str]:
    """Write report.json/.md/.html (+ the PNGs when there are metrics) into ``output``; return the URLs written.

    ``sections``: extra Markdown sections (e.g. the nightly drift section), appended in order to report.md
    and rendered into report.html; the data behind them belongs in ``report`` under their own keys.
    """
    written = []
    pictures = report_pictures(report)
    for name, data in pictures.items():
        storage.write_bytes(join(output, name), data)
        written.append(join(output, name))
    markdown = md.render_markdown(report, title)
    for section in sections:
        markdown = markdown.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    for name, data in (
        ("report.json", json.dumps(report, indent=2).encode()),
        ("report.md", markdown.encode()),
        ("report.html", markdown_to_html(markdown, title, pictures).encode()),
    ):
        storage.write_bytes(join(output, name), data)
        written.append(join(output, name))
    return written
