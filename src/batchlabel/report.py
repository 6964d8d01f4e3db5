"""Accuracy report: metrics vs gold, confusion matrix PNG, label distribution, throughput.

Written as report.json + report.md + report.html (+ confusion_matrix.png) next to the output.
"""

from __future__ import annotations

import html
import io
import json
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from batchlabel.storage import StorageSettings, join

ERROR_LABEL = "(error)"


def compute_metrics(gold: list[str], predicted: list[str | None], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1/support and the confusion matrix.

    Rows without a prediction (error rows) count as wrong and appear in an extra "(error)" column.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = list(gold)
    y_pred = [p if p is not None else ERROR_LABEL for p in predicted]
    n = len(y_true)
    accuracy = sum(t == p for t, p in zip(y_true, y_pred)) / n if n else 0.0
    used = [label for label in labels if label in set(y_true) | set(y_pred)]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=used, zero_division=0
    )
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(used)
    }
    matrix_labels = list(labels) + ([ERROR_LABEL] if ERROR_LABEL in y_pred else [])
    matrix = confusion_matrix(y_true, y_pred, labels=matrix_labels) if n else np.zeros((0, 0), int)
    return {
        "rows": n,
        "accuracy": float(accuracy),
        "macro_f1": float(np.mean(f1)) if len(used) else 0.0,
        "weighted_f1": float(np.average(f1, weights=support)) if support.sum() else 0.0,
        "per_class": per_class,
        "confusion_matrix": {"labels": matrix_labels, "matrix": matrix.tolist()},
    }


def build_report(table: pa.Table, labels: list[str], run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report dict for a labeled table (columns label, gold, error, confidence)."""
    predicted = table.column("label").to_pylist()
    errors = table.column("error").to_pylist()
    gold = table.column("gold").to_pylist() if "gold" in table.column_names else [None] * len(predicted)
    confidence = table.column("confidence").to_pylist()
    report: dict[str, Any] = {
        "rows": len(predicted),
        "labeled_rows": sum(e is None for e in errors),
        "error_rows": sum(e is not None for e in errors),
        "error_reasons": dict(Counter(e for e in errors if e is not None).most_common(10)),
        "truncated_rows": int(sum(bool(t) for t in table.column("truncated").to_pylist()))
        if "truncated" in table.column_names
        else 0,
        "label_distribution": {label: predicted.count(label) for label in labels},
        "run": run or {},
    }
    known = set(labels)
    pairs = [(g, p, c) for g, p, c in zip(gold, predicted, confidence) if g is not None]
    outside = [g for g, _, _ in pairs if g not in known]
    scored = [(g, p, c) for g, p, c in pairs if g in known]
    report["gold_rows"] = len(pairs)
    report["gold_outside_label_set"] = {"rows": len(outside), "examples": sorted(set(outside))[:10]}
    if scored:
        metrics = compute_metrics([g for g, _, _ in scored], [p for _, p, _ in scored], labels)
        right = [c for g, p, c in scored if p == g and c is not None]
        wrong = [c for g, p, c in scored if p != g and c is not None]
        metrics["mean_confidence_correct"] = float(np.mean(right)) if right else None
        metrics["mean_confidence_wrong"] = float(np.mean(wrong)) if wrong else None
        report["metrics"] = metrics
    return report


def confusion_png(metrics: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = metrics["confusion_matrix"]["labels"]
    matrix = np.array(metrics["confusion_matrix"]["matrix"])
    true_labels = [label for label in labels if label != "(error)"]
    matrix = matrix[: len(true_labels)]
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(true_labels)), true_labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color="white" if matrix[i, j] > threshold else "black", fontsize=8)
    ax.set_title(f"accuracy {metrics['accuracy']:.3f} · macro-F1 {metrics['macro_f1']:.3f}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def render_markdown(report: dict[str, Any], title: str) -> str:
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


def write_report(report: dict[str, Any], output: str, storage: StorageSettings, title: str) -> list[str]:
    """Write report.json/.md/.html (+ PNG when there are metrics); return the URLs written."""
    written = []
    if report.get("metrics"):
        storage.write_bytes(join(output, "confusion_matrix.png"), confusion_png(report["metrics"]))
        written.append(join(output, "confusion_matrix.png"))
    markdown = render_markdown(report, title)
    for name, data in (
        ("report.json", json.dumps(report, indent=2).encode()),
        ("report.md", markdown.encode()),
        ("report.html", render_html(markdown, title).encode()),
    ):
        storage.write_bytes(join(output, name), data)
        written.append(join(output, name))
    return written
