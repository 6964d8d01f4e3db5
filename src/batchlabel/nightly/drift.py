"""The drift check: tonight's labels and gold metrics compared with the previous night.

Each night writes ``drift.json`` and ``drift.md`` into its partition; the same section ends the
partition's report (report.json "drift", the last section of report.md and report.html).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchlabel.config.nightly import PipelineSpec
from batchlabel.errors import BatchlabelError
from batchlabel.io.sink import read_committed
from batchlabel.io.storage import StorageSettings, join
from batchlabel.nightly.partitions import last_per_key, list_partitions, lookup, partition_url
from batchlabel.nightly.staging import REASON_COLUMN, read_corpus_keys
from batchlabel.report.escape import cell
from batchlabel.report.metrics import ERROR_LABEL

DRIFT_JSON = "drift.json"
DRIFT_MD = "drift.md"


def label_distribution(labels: list[str | None], errors: list[str | None], names: list[str]) -> dict[str, float]:
    """Share of each label (and of error rows, as "(error)", when there are any)."""
    return distribution_of(pa.table({"label": pa.array(labels, pa.string()), "error": pa.array(errors, pa.string())}), names)


def distribution_of(table: pa.Table, names: list[str]) -> dict[str, float]:
    """``label_distribution`` of a table (columns label, error), counted by Arrow."""
    label, error = table.column("label").cast(pa.string()), table.column("error").cast(pa.string())
    effective = pc.if_else(pc.is_null(error), label, pa.scalar(ERROR_LABEL))
    counts = {item["values"]: item["counts"] for item in pc.value_counts(effective).to_pylist()}
    total = table.num_rows or 1
    keys = names + ([ERROR_LABEL] if counts.get(ERROR_LABEL) else [])
    return {key: counts.get(key, 0) / total for key in keys}


def current_distribution(
    partition: str, storage: StorageSettings, previous: pa.Table, labeled: bool, names: list[str]
) -> dict[str, float]:
    """Label shares over tonight's corpus: tonight's labels for the delta, the latest earlier ones otherwise.

    ``previous`` is ``latest_keys`` of the partitions before tonight; ``labeled``: tonight labeled a delta.
    Arrow joins of the corpus keys with tonight's labels and with ``previous``.
    """
    corpus = read_corpus_keys(partition, storage)
    relabeled = pc.is_valid(corpus.column(REASON_COLUMN))
    sources = [(pc.invert(relabeled), previous)]
    if labeled:
        tonight = last_per_key(read_committed(partition, storage, columns=["id", "label", "error"]))
        sources.append((relabeled, tonight))
    elif pc.any(relabeled).as_py():
        raise BatchlabelError(f"{partition} staged rows to label but holds no labeled delta.")
    parts = []
    for mask, labels in sources:
        joined = lookup(corpus.filter(mask).select(["id"]), labels, ["label", "error"])
        if joined.column("_found").null_count:
            missing = joined.filter(pc.is_null(joined.column("_found"))).column("id")[0].as_py()
            raise BatchlabelError(f"{partition}: the corpus row {missing!r} has no label, tonight or earlier.")
        parts.append(joined.select(["label", "error"]))
    return distribution_of(pa.concat_tables(parts, promote_options="permissive"), names)


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Half the L1 distance between two label distributions (0 = identical, 1 = disjoint)."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def previous_drift(root: str, storage: StorageSettings, before: str) -> dict | None:
    """The drift.json of the latest night before ``before`` that wrote one (None on the first night)."""
    for date in reversed(list_partitions(root, storage)):
        if date >= before:
            continue
        url = join(partition_url(root, date), DRIFT_JSON)
        if storage.exists(url):
            return json.loads(storage.read_bytes(url))
    return None


def build_drift(
    pipeline: PipelineSpec,
    date: str,
    fingerprint: str,
    counts: dict[str, int],
    distribution: dict[str, float],
    gold: dict | None,
    previous: dict | None,
) -> dict[str, Any]:
    """Compare tonight with the previous night and list the thresholds it violates."""
    thresholds = pipeline.drift
    before = previous or {}
    drift: dict[str, Any] = {
        "pipeline": pipeline.name,
        "date": date,
        "previous_date": before.get("date"),
        "fingerprint": fingerprint,
        "previous_fingerprint": before.get("fingerprint"),
        "fingerprint_changed": bool(previous) and before.get("fingerprint") != fingerprint,
        "rows": counts,
        "gold": gold,
        "previous_gold": before.get("gold"),
        "label_distribution": distribution,
        "previous_label_distribution": before.get("label_distribution"),
        "thresholds": thresholds.model_dump(),
    }
    violations: list[str] = []
    prev_gold = drift["previous_gold"]
    if gold and prev_gold:
        for metric, limit in (("accuracy", thresholds.max_accuracy_drop), ("macro_f1", thresholds.max_macro_f1_drop)):
            delta = gold[metric] - prev_gold[metric]
            drift[f"{metric}_delta"] = delta
            if limit is not None and -delta > limit + 1e-12:
                violations.append(f"{metric} dropped by {-delta:.4f} (> {limit}) vs {drift['previous_date']}")
    prev_dist = drift["previous_label_distribution"]
    if prev_dist is not None:
        shift = total_variation(distribution, prev_dist)
        drift["label_shift_tvd"] = shift
        drift["label_share_delta"] = {
            k: distribution.get(k, 0.0) - prev_dist.get(k, 0.0) for k in sorted(set(distribution) | set(prev_dist))
        }
        if thresholds.max_label_shift is not None and shift > thresholds.max_label_shift + 1e-12:
            violations.append(f"label distribution shifted by {shift:.4f} (TVD > {thresholds.max_label_shift})")
    drift["violations"] = violations
    drift["status"] = "regression" if violations else "ok"
    return drift


def render_drift(drift: dict[str, Any]) -> str:
    """The drift section as Markdown."""
    rows = drift["rows"]
    lines = [
        f"## Drift vs previous night ({drift['previous_date'] or 'none'})",
        "",
        f"- night: {drift['date']}, status: **{drift['status']}**",
        f"- labeler fingerprint: `{drift['fingerprint']}`" + (" (changed: everything re-labeled)" if drift["fingerprint_changed"] else ""),
        f"- corpus rows: {rows['corpus']}; re-labeled tonight: {rows['relabel']} (new {rows['new']}, changed text "
        f"{rows['changed_text']}, new fingerprint {rows['fingerprint']}, earlier errors {rows['error']}); "
        f"unchanged {rows['unchanged']}; removed since earlier nights {rows['removed']}",
    ]
    gold, prev = drift.get("gold"), drift.get("previous_gold")
    if gold:
        line = f"- gold sample ({gold['rows']} rows): accuracy {gold['accuracy']:.4f}, macro-F1 {gold['macro_f1']:.4f}"
        if prev:
            line += f" (Δ accuracy {drift['accuracy_delta']:+.4f}, Δ macro-F1 {drift['macro_f1_delta']:+.4f})"
        lines.append(line)
    else:
        lines.append("- no gold sample configured: accuracy/F1 not tracked")
    if "label_shift_tvd" in drift:
        lines.append(f"- label distribution shift (total variation): {drift['label_shift_tvd']:.4f}")
    lines += ["", "| label | share | previous | Δ |", "|---|---:|---:|---:|"]
    prev_dist = drift.get("previous_label_distribution") or {}
    for label, share in drift["label_distribution"].items():
        before = prev_dist.get(label)
        delta = f"{share - before:+.4f}" if before is not None else ""
        lines.append(f"| {cell(label)} | {share:.4f} | {'' if before is None else f'{before:.4f}'} | {delta} |")
    if drift["violations"]:
        lines += ["", "### Regressions", ""] + [f"- {v}" for v in drift["violations"]]
    return "\n".join(lines) + "\n"


def write_drift(partition: str, storage: StorageSettings, drift: dict[str, Any], markdown: str, title: str) -> list[str]:
    """Write drift.json and drift.md (``title`` as its heading) into the partition; return their URLs."""
    json_url, md_url = join(partition, DRIFT_JSON), join(partition, DRIFT_MD)
    storage.write_bytes(json_url, json.dumps(drift, indent=2).encode())
    storage.write_bytes(md_url, (f"# {title}\n\n" + markdown).encode())
    return [json_url, md_url]
