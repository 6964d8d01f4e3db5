"""The report's pictures (PNG bytes, matplotlib with the Agg backend)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from batchlabel.report.metrics import ERROR_LABEL


def confusion_png(metrics: dict[str, Any]) -> bytes:
    """The confusion matrix of ``metrics`` (gold rows x predicted columns, error column included) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def figure_png(fig, dpi: int) -> bytes:
    """A matplotlib figure as PNG bytes (tight layout); the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()
