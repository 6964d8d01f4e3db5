"""Confidence quality vs gold (numpy; AUROC by scikit-learn): calibration error, reliability bins, AUROC,
accuracy-coverage.

Inputs everywhere: ``confidence`` (one float per row, the labeler's confidence in its label) and ``correct``
(one bool per row: the label equals gold). Rows without a confidence (NaN) are dropped by ``clean``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

DEFAULT_BINS = 15
DEFAULT_TARGETS = (0.90, 0.95, 0.99)


def clean(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """``confidence`` as float64 clipped to [0, 1] and ``correct`` as bool, rows with a NaN confidence dropped."""
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    right = np.asarray(correct, dtype=bool).reshape(-1)
    if conf.shape != right.shape:
        raise ValueError(f"confidence has {conf.size} rows, correct has {right.size}")
    keep = ~np.isnan(conf)
    return np.clip(conf[keep], 0.0, 1.0), right[keep]


def _bin_index(conf: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1]: bin i holds (i/bins, (i+1)/bins], bin 0 also holds 0."""
    return np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability_bins(confidence: Any, correct: Any, bins: int = DEFAULT_BINS) -> list[dict[str, Any]]:
    """Per equal-width confidence bin: lower/upper edge, rows, mean confidence and accuracy (None when empty)."""
    conf, right = clean(confidence, correct)
    index = _bin_index(conf, bins)
    rows = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    right_sum = np.bincount(index, weights=right.astype(np.float64), minlength=bins)
    out = []
    for i in range(bins):
        n = int(rows[i])
        out.append({
            "lower": i / bins,
            "upper": (i + 1) / bins,
            "rows": n,
            "mean_confidence": float(conf_sum[i] / n) if n else None,
            "accuracy": float(right_sum[i] / n) if n else None,
        })
    return out


def expected_calibration_error(confidence: Any, correct: Any, bins: int = DEFAULT_BINS) -> float:
    """ECE: sum over equal-width bins of (rows in bin / rows) * |accuracy - mean confidence| (0.0 with no rows)."""
    table = reliability_bins(confidence, correct, bins)
    total = sum(b["rows"] for b in table)
    if not total:
        return 0.0
    return float(sum(b["rows"] / total * abs(b["accuracy"] - b["mean_confidence"]) for b in table if b["rows"]))


def auroc(confidence: Any, correct: Any) -> float | None:
    """Area under the ROC curve of confidence as a score for "correct" (scikit-learn's ``roc_auc_score``).

    The chance that a random correct row has a higher confidence than a random wrong one (ties count 1/2).
    None when all rows are correct or all wrong (undefined).
    """
    from sklearn.metrics import roc_auc_score

    conf, right = clean(confidence, correct)
    positives = int(np.count_nonzero(right))
    if not positives or positives == right.size:
        return None
    return float(roc_auc_score(right, conf))


def coverage_curve(confidence: Any, correct: Any) -> dict[str, np.ndarray]:
    """Keep the rows with confidence >= t, for every distinct t (highest first): coverage and accuracy.

    Returns arrays ``threshold`` (descending), ``rows`` kept, ``coverage`` (rows kept / rows) and
    ``accuracy`` of the kept rows; empty arrays when there are no rows.
    """
    conf, right = clean(confidence, correct)
    order = np.argsort(-conf, kind="mergesort")
    conf, right = conf[order], right[order]
    if not conf.size:
        empty = np.array([], dtype=np.float64)
        return {"threshold": empty, "rows": empty.astype(np.int64), "coverage": empty, "accuracy": empty}
    # the last row of each run of equal confidences: keeping ">= t" keeps the whole run
    ends = np.flatnonzero(np.concatenate((conf[1:] != conf[:-1], [True])))
    kept = ends + 1
    correct_kept = np.cumsum(right)[ends]
    return {
        "threshold": conf[ends],
        "rows": kept.astype(np.int64),
        "coverage": kept / conf.size,
        "accuracy": correct_kept / kept,
    }


def thresholds_for(
    confidence: Any, correct: Any, targets: Sequence[float] = DEFAULT_TARGETS
) -> list[dict[str, Any]]:
    """Per target accuracy: the lowest threshold t such that the rows with confidence >= t reach it.

    Each entry: ``target``, ``threshold`` (None when no threshold reaches the target), ``coverage``,
    ``rows`` and ``accuracy`` of the rows kept at that threshold. This is what a cascade stage's
    ``min_confidence`` should be set to for that accuracy on the rows it keeps.
    """
    curve = coverage_curve(confidence, correct)
    out = []
    for target in targets:
        reached = np.flatnonzero(curve["accuracy"] >= target - 1e-12)
        if not reached.size:
            out.append({"target": float(target), "threshold": None, "coverage": 0.0, "rows": 0, "accuracy": None})
            continue
        i = int(reached[-1])  # thresholds descend: the last index reaching the target is the lowest threshold
        out.append({
            "target": float(target),
            "threshold": float(curve["threshold"][i]),
            "coverage": float(curve["coverage"][i]),
            "rows": int(curve["rows"][i]),
            "accuracy": float(curve["accuracy"][i]),
        })
    return out


def coverage_table(
    confidence: Any, correct: Any, thresholds: Sequence[float] = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
) -> list[dict[str, Any]]:
    """Accuracy-coverage at fixed thresholds: rows with confidence >= t, their coverage and accuracy."""
    conf, right = clean(confidence, correct)
    out = []
    for t in thresholds:
        keep = conf >= t
        n = int(np.count_nonzero(keep))
        out.append({
            "threshold": float(t),
            "rows": n,
            "coverage": n / conf.size if conf.size else 0.0,
            "accuracy": float(np.count_nonzero(right[keep]) / n) if n else None,
        })
    return out


def curve_points(curve: dict[str, np.ndarray], points: int = 101) -> dict[str, list[float]]:
    """At most ``points`` points of a coverage curve, evenly spaced in rank (the first and last always kept)."""
    n = len(curve["threshold"])
    index = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(np.int64)) if n else np.array([], int)
    return {key: [float(v) for v in curve[key][index]] for key in ("threshold", "coverage", "accuracy")}


def calibration_report(confidence: Any, correct: Any, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Everything the report shows about confidence quality, JSON-ready (the curve downsampled for the picture)."""
    conf, right = clean(confidence, correct)
    return {
        "rows": int(conf.size),
        "ece": expected_calibration_error(conf, right, bins),
        "bins": bins,
        "auroc": auroc(conf, right),
        "reliability": reliability_bins(conf, right, bins),
        "coverage": coverage_table(conf, right),
        "thresholds": thresholds_for(conf, right),
        "curve": curve_points(coverage_curve(conf, right)),
    }
