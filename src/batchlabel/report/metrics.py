"""Accuracy metrics vs gold (computed column-wise with Arrow + numpy) and the report dict of a run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchlabel.report.calibration import calibration_report

ERROR_LABEL = "(error)"


def compute_metrics(gold: list[str], predicted: list[str | None], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class P/R/F1/support and the confusion matrix.

    Rows without a prediction (error rows) count as wrong and appear in an extra "(error)" column.
    """
    return metrics_from_arrays(pa.array(list(gold), pa.string()), pa.array(list(predicted), pa.string()), labels)


def _codes(values: pa.Array, labels: list[str]) -> np.ndarray:
    """Index of each value in ``labels``; null -> len(labels) (the error column); unknown -> -1."""
    codes = pc.index_in(values, value_set=pa.array(labels, pa.string()))
    codes = pc.if_else(pc.is_null(values), len(labels), pc.fill_null(codes, -1))
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)


def metrics_from_arrays(gold: pa.Array, predicted: pa.Array, labels: list[str]) -> dict[str, Any]:
    """compute_metrics on Arrow columns, vectorised (no Python object per row: flat memory at millions of rows).

    Same definitions as scikit-learn's precision_recall_fscore_support(zero_division=0) and confusion_matrix.
    """
    k = len(labels)
    y_true, y_pred = _codes(gold, labels), _codes(predicted, labels)
    n = len(y_true)
    true_known, pred_known = (y_true >= 0) & (y_true < k), (y_pred >= 0) & (y_pred < k)
    correct = true_known & (y_true == y_pred)
    accuracy = float(np.count_nonzero(correct) / n) if n else 0.0
    support_all = np.bincount(y_true[true_known], minlength=k)
    predicted_all = np.bincount(y_pred[pred_known], minlength=k)
    true_positive_all = np.bincount(y_true[correct], minlength=k)
    used = [i for i in range(k) if support_all[i] or predicted_all[i]]
    tp, support, pred_count = true_positive_all[used], support_all[used], predicted_all[used]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_count > 0, tp / np.maximum(pred_count, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        denominator = pred_count + support
        f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    per_class = {
        labels[i]: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
                    "support": int(support[j])}
        for j, i in enumerate(used)
    }
    has_errors = bool(np.any(y_pred == k))
    size = k + (1 if has_errors else 0)
    in_matrix = (y_true >= 0) & (y_true < size) & (y_pred >= 0) & (y_pred < size)
    matrix = np.bincount(y_true[in_matrix] * size + y_pred[in_matrix], minlength=size * size).reshape(size, size)
    return {
        "rows": n,
        "accuracy": accuracy,
        "macro_f1": float(np.mean(f1)) if used else 0.0,
        "weighted_f1": float(np.average(f1, weights=support)) if support.sum() else 0.0,
        "per_class": per_class,
        "confusion_matrix": {"labels": list(labels) + ([ERROR_LABEL] if has_errors else []),
                             "matrix": matrix.tolist() if n else []},
    }


def _column(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks() if name in table.column_names else pa.nulls(table.num_rows, pa.string())


def build_report(table: pa.Table, labels: list[str], run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report dict for a labeled table (columns label, gold, error, confidence), computed column-wise."""
    predicted, errors, gold = _column(table, "label"), _column(table, "error"), _column(table, "gold")
    confidence = table.column("confidence").combine_chunks()
    error_counts = pc.value_counts(errors.drop_null()).to_pylist()
    error_counts.sort(key=lambda item: -item["counts"])  # stable: ties keep first-seen order, as Counter does
    label_counts = {item["values"]: item["counts"] for item in pc.value_counts(predicted.drop_null()).to_pylist()}
    report: dict[str, Any] = {
        "rows": table.num_rows,
        "labeled_rows": errors.null_count,
        "error_rows": table.num_rows - errors.null_count,
        "error_reasons": {item["values"]: item["counts"] for item in error_counts[:10]},
        "truncated_rows": int(pc.sum(pc.cast(table.column("truncated"), pa.int64())).as_py() or 0)
        if "truncated" in table.column_names
        else 0,
        "label_distribution": {label: label_counts.get(label, 0) for label in labels},
        "run": run or {},
    }
    has_gold = pc.is_valid(gold)
    known = pc.and_(has_gold, pc.is_in(gold, value_set=pa.array(labels, pa.string())))
    outside = pc.filter(gold, pc.and_(has_gold, pc.invert(known)))
    report["gold_rows"] = len(gold) - gold.null_count
    report["gold_outside_label_set"] = {"rows": len(outside), "examples": sorted(pc.unique(outside).to_pylist())[:10]}
    if pc.any(known).as_py():
        scored_gold, scored_pred = pc.filter(gold, known), pc.filter(predicted, known)
        scored_conf = pc.filter(confidence, known)
        metrics = metrics_from_arrays(scored_gold, scored_pred, labels)
        right = pc.and_(pc.equal(scored_pred, scored_gold), pc.is_valid(scored_conf))
        right = pc.fill_null(right, False)
        wrong = pc.and_(pc.invert(right), pc.is_valid(scored_conf))
        metrics["mean_confidence_correct"] = _mean(pc.filter(scored_conf, right))
        metrics["mean_confidence_wrong"] = _mean(pc.filter(scored_conf, wrong))
        report["metrics"] = metrics
        report["calibration"] = calibration_report(_floats(scored_conf), _bools(pc.equal(scored_pred, scored_gold)))
    from batchlabel.report.usage import usage_section  # tokens and cost (issue 16); run["price"]: engine.price

    usage = usage_section(table, labels, report["run"].get("price"))
    if usage is not None:
        report["usage"] = usage
    from batchlabel.report.cascade import cascade_section  # method: cascade (labeled_by)

    cascade = cascade_section(table, labels, report["run"].get("cascade"))
    if cascade is not None:
        report["cascade"] = cascade
    return report


def _floats(values: pa.Array) -> np.ndarray:
    """A float column as float64, nulls as NaN (rows without a confidence: dropped by the calibration)."""
    return np.asarray(pc.fill_null(pc.cast(values, pa.float64()), float("nan")).to_numpy(zero_copy_only=False))


def _bools(values: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _mean(values: pa.Array) -> float | None:
    return float(np.mean(values.to_numpy(zero_copy_only=False).astype(np.float64))) if len(values) else None
