"""The report as Markdown (report.md; report.html is rendered from the same lines by report/html.py).

Pictures are referenced by file name (``![alt](name.png)``): the PNG files next to report.md, inlined
into report.html.
"""

from __future__ import annotations

from typing import Any

from batchlabel.report.escape import cell

CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"
COVERAGE_PNG = "accuracy_coverage.png"


def render_markdown(report: dict[str, Any], title: str) -> str:
    """The report as Markdown: counts, run speed, metrics vs gold, confidence quality, usage, labels, errors."""
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
            lines.append(f"| {cell(label)} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
        lines += ["", f"![confusion matrix]({CONFUSION_PNG})"]
    else:
        lines.append("- no gold labels: metrics not computed")
    if report["gold_outside_label_set"]["rows"]:
        g = report["gold_outside_label_set"]
        lines.append(f"- {g['rows']} gold labels outside the label set were excluded (e.g. {cell(', '.join(g['examples']))})")
    if report.get("calibration", {}).get("rows"):
        lines += calibration_markdown(report["calibration"], metrics or {})
    if report.get("usage"):
        lines += usage_lines(report["usage"])
    if report.get("cascade"):
        from batchlabel.report.cascade import cascade_markdown

        lines += cascade_markdown(report["cascade"])
    lines += ["", "## Label distribution", "", "| label | rows |", "|---|---:|"]
    lines += [f"| {cell(label)} | {count} |" for label, count in report["label_distribution"].items()]
    if report["error_reasons"]:
        lines += ["", "## Error reasons", "", "| reason | rows |", "|---|---:|"]
        lines += [f"| {cell(reason)} | {count} |" for reason, count in report["error_reasons"].items()]
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def calibration_markdown(calibration: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """The confidence section: ECE, AUROC, reliability diagram, accuracy-coverage table/curve, thresholds."""
    auroc = calibration["auroc"]
    lines = [
        "", "## Confidence", "",
        f"- expected calibration error (ECE, {calibration['bins']} equal-width bins): **{calibration['ece']:.4f}** "
        f"(0 = confidence equals accuracy; on {calibration['rows']} gold rows with a confidence)",
        f"- AUROC of confidence for correctness: **{_num(auroc)}** "
        + ("(the chance that a correct row has a higher confidence than a wrong one; 0.5 = confidence says nothing)"
           if auroc is not None else "(undefined: every row is right, or every row is wrong)"),
    ]
    if metrics.get("mean_confidence_correct") is not None or metrics.get("mean_confidence_wrong") is not None:
        lines.append(f"- mean confidence: correct rows {_num(metrics.get('mean_confidence_correct'))}, "
                     f"wrong rows {_num(metrics.get('mean_confidence_wrong'))}")
    lines += ["", f"![reliability diagram]({RELIABILITY_PNG})", "", "### Accuracy vs coverage", "",
              "Keep only the rows with confidence ≥ t: the share of rows kept (coverage) and their accuracy.", "",
              "| confidence ≥ t | rows kept | coverage | accuracy |", "|---:|---:|---:|---:|"]
    for row in calibration["coverage"]:
        lines.append(f"| {row['threshold']:.2f} | {row['rows']} | {row['coverage']:.3f} | {_num(row['accuracy'])} |")
    lines += ["", "| target accuracy | lowest t reaching it | coverage | rows kept | accuracy |",
              "|---:|---:|---:|---:|---:|"]
    for row in calibration["thresholds"]:
        if row["threshold"] is None:
            lines.append(f"| {row['target']:.0%} | not reached | 0 | 0 | n/a |")
        else:
            every = " (every row)" if row["coverage"] >= 1.0 else ""
            lines.append(f"| {row['target']:.0%} | {row['threshold']:.4f}{every} | {row['coverage']:.3f} "
                         f"| {row['rows']} | {row['accuracy']:.4f} |")
    lines += [
        "",
        "Set a cascade stage's `min_confidence` to the t of the accuracy you need: the rows at or above it keep "
        "their label at that accuracy (measured on this gold sample), the rest go to the next stage, or to "
        "people (`batchlabel review export OUTPUT --below t`).",
        "", f"![accuracy-coverage curve]({COVERAGE_PNG})",
    ]
    return lines


def usage_lines(usage: dict[str, Any]) -> list[str]:
    """The tokens-and-cost section (report["usage"]), rendered by report/usage.py."""
    from batchlabel.report.usage import usage_markdown

    return ["", *usage_markdown(usage)]
