"""The report's pictures (PNG bytes, matplotlib with the Agg backend)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from batchlabel.report.metrics import ERROR_LABEL


def confusion_png(metrics: dict[str, Any]) -> bytes:
    """The confusion matrix of ``metrics`` (gold rows x predicted columns, error column included) as a PNG."""
    plt = _pyplot()
    labels = metrics["confusion_matrix"]["labels"]
    matrix = np.array(metrics["confusion_matrix"]["matrix"])
    true_labels = [label for label in labels if label != ERROR_LABEL]
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
    return figure_png(fig, dpi=110)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reliability_png(calibration: dict[str, Any]) -> bytes:
    """Reliability diagram: accuracy per equal-width confidence bin vs the diagonal, rows per bin below."""
    plt = _pyplot()
    bins = [b for b in calibration["reliability"] if b["rows"]]
    width = 1.0 / calibration["bins"]
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5.5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.bar([b["lower"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
           edgecolor="black", color="#4c78a8", alpha=0.8, label="accuracy in bin")
    ax.plot([b["lower"] + width / 2 for b in bins], [b["mean_confidence"] for b in bins], "_", color="#e45756",
            markersize=12, markeredgewidth=2.5, label="mean confidence in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"reliability · ECE {calibration['ece']:.3f} · AUROC {_maybe(calibration['auroc'])}")
    counts.bar([b["lower"] for b in bins], [b["rows"] for b in bins], width=width, align="edge", color="#999999")
    counts.set_xlabel("confidence")
    counts.set_ylabel("rows")
    counts.set_yscale("log")
    return figure_png(fig, dpi=100)


def coverage_png(calibration: dict[str, Any]) -> bytes:
    """Accuracy vs coverage when keeping the rows with confidence >= t, with the 90/95/99% thresholds marked."""
    plt = _pyplot()
    curve = calibration["curve"]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot(curve["coverage"], curve["accuracy"], color="#4c78a8")
    marks: dict[float, list[str]] = {}  # one mark per threshold (several targets may share one)
    points = {p["threshold"]: p for p in calibration["thresholds"] if p["threshold"] is not None}
    for point in calibration["thresholds"]:
        if point["threshold"] is not None:
            marks.setdefault(point["threshold"], []).append(f"{point['target']:.0%}")
    for threshold, targets in marks.items():
        point = points[threshold]
        ax.plot(point["coverage"], point["accuracy"], "o", color="#e45756")
        ax.annotate(f"{', '.join(targets)}: t={threshold:.3f}", (point["coverage"], point["accuracy"]),
                    textcoords="offset points", xytext=(-8, 6), ha="right", fontsize=8)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("coverage (share of rows with confidence >= t)")
    ax.set_ylabel("accuracy of those rows")
    ax.grid(alpha=0.3)
    ax.set_title("accuracy vs coverage")
    return figure_png(fig, dpi=100)


def _maybe(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def figure_png(fig, dpi: int) -> bytes:
    """A matplotlib figure as PNG bytes (tight layout); the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()
