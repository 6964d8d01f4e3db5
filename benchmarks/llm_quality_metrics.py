"""Metrics of benchmarks/llm_quality.py: Wilson interval, ECE / AUROC of a confidence, per-class errors."""

from __future__ import annotations

import math
from collections import Counter

ECE_BINS = 15


def interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(centre - half, 4), round(centre + half, 4))


def calibration_metrics(confidence: list[float], correct: list[bool]) -> dict:
    """ECE (15 equal-width bins) and AUROC of confidence for correct-vs-wrong (None when one class is absent)."""
    import numpy as np

    conf = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    hit = np.asarray(correct, dtype=bool)
    try:  # issue 15's shared implementation, when it is there
        from batchlabel.report.calibration import auroc, expected_calibration_error

        return {"ece": float(expected_calibration_error(conf, hit, bins=ECE_BINS)), "auroc": auroc(conf, hit)}
    except ImportError:
        pass
    bins = np.minimum((conf * ECE_BINS).astype(int), ECE_BINS - 1)
    ece = sum(abs(hit[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean() for b in range(ECE_BINS) if (bins == b).any())
    from sklearn.metrics import roc_auc_score

    return {"ece": float(ece), "auroc": _maybe(roc_auc_score, hit, conf)}


def _maybe(fn, hit, conf):
    if hit.min() == hit.max():
        return None  # undefined: all right, all wrong, or one confidence for all (batched prompts say 1.0)
    return float(fn(hit, conf))


def per_class(golds: list[str], predicted: list[str], names: list[str]) -> dict:
    """Per gold class: rows, correct, and what the wrong rows were called."""
    out = {}
    for name in names:
        got = [p for g, p in zip(golds, predicted) if g == name]
        out[name] = {"rows": len(got), "correct": sum(p == name for p in got),
                     "called": dict(Counter(p for p in got if p != name).most_common())}
    return out


def scored(labels: list, confidence: list, golds: list[str], names: list[str]) -> dict:
    from sklearn.metrics import f1_score

    shown = [p or "<error>" for p in labels]
    correct = [p == g for p, g in zip(shown, golds)]
    acc = sum(correct) / len(golds)
    low, high = interval(sum(correct), len(golds))
    return {
        "rows": len(golds),
        "accuracy": acc,
        "accuracy_95": [low, high],
        "macro_f1": f1_score(golds, shown, labels=names, average="macro", zero_division=0),
        "error_rows": sum(p is None for p in labels),
        **calibration_metrics([c if c is not None else 0.0 for c in confidence], correct),
        "per_class": per_class(golds, shown, names),
    }
