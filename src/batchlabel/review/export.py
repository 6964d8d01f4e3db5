"""`review export`: the rows of a labeled output that people should look at, as Label Studio tasks or CSV.

Chosen rows: every labeled row with confidence < ``below`` (lowest first), plus ``sample_above`` rows drawn
at random (seeded) from the rest: the audit sample, whose reviewed accuracy estimates that of the rows
nobody looks at. Error rows have no label to review and are counted, not exported.

Texts: from the output's ``text`` column (written with ``output.keep_text: true``), else from the job's
input (``input_path``), matched by id; an input text whose hash differs from the one labeled is counted
as ``changed_texts`` (the reviewer sees today's text, the prediction was made on the old one).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchlabel.errors import BatchlabelError
from batchlabel.hashing import text_hash
from batchlabel.io.reads import concat, parquet_schema, read_parquet_files
from batchlabel.io.sink import committed_files, read_manifest
from batchlabel.io.storage import StorageSettings
from batchlabel.review import labelstudio

FORMATS = ("label-studio", "csv")
CSV_COLUMNS = ["id", "text", "predicted_label", "confidence", "reason", "output", "reviewed_label"]
LOW, AUDIT = "low_confidence", "audit"
LIGHT_COLUMNS = ["id", "label", "confidence", "error", "labeler_fingerprint", "text_hash"]


def output_shards(output: str, storage: StorageSettings) -> tuple[dict, list[str]]:
    """The manifest of a committed output and the URLs of its part files."""
    manifest = read_manifest(output, storage)
    if manifest is None:
        raise BatchlabelError(f"{output} holds no committed batchlabel run (no _manifest.json): nothing to export.")
    return manifest, committed_files(output, manifest)


def select_rows(table: pa.Table, below: float, sample_above: int, seed: int) -> tuple[pa.Table, dict[str, int]]:
    """The rows to review (columns of ``table`` + ``reason``): low-confidence ones, then the audit sample."""
    labeled = pc.and_(pc.is_null(table.column("error")), pc.is_valid(table.column("confidence")))
    labeled = pc.and_(labeled, pc.is_valid(table.column("label")))
    rows = table.filter(labeled)
    low_mask = pc.less(rows.column("confidence"), below)
    low = rows.filter(low_mask).sort_by([("confidence", "ascending"), ("id", "ascending")])
    confident = rows.filter(pc.invert(low_mask)).sort_by("id")
    take = min(sample_above, confident.num_rows)
    picked = np.sort(np.random.default_rng(seed).choice(confident.num_rows, size=take, replace=False)) if take else []
    audit = confident.take(pa.array(picked, pa.int64()))
    chosen = pa.concat_tables([
        low.append_column("reason", pa.array([LOW] * low.num_rows, pa.string())),
        audit.append_column("reason", pa.array([AUDIT] * audit.num_rows, pa.string())),
    ])
    counts = {"rows": table.num_rows, "error_rows_not_exported": table.num_rows - rows.num_rows,
              LOW: low.num_rows, AUDIT: audit.num_rows, "confident_rows": confident.num_rows}
    return chosen, counts


def _texts_from_output(shards: list[str], storage: StorageSettings, ids: pa.Array) -> dict[str, str]:
    """id -> text of the chosen rows: an id look-up per part file (row groups without them are not read)."""
    texts: dict[str, str] = {}
    if not len(ids):
        return texts
    for part in read_parquet_files(shards, storage, ["id", "text"], ids=ids):
        texts.update(zip(part.column("id").to_pylist(), part.column("text").to_pylist()))
    return texts


def _texts_from_input(input_spec: Any, storage: StorageSettings, ids: pa.Array) -> dict[str, str]:
    from batchlabel.io.source import plan_input, read_shards

    texts: dict[str, str] = {}
    plan = plan_input(input_spec, storage, shard_rows=100_000)
    for file in plan.files:
        for part in read_shards(input_spec, storage, file, file.shards):
            part = part.filter(pc.is_in(part.column("id"), value_set=ids))
            texts.update(zip(part.column("id").to_pylist(), part.column("text").to_pylist()))
    return texts


def export_review(
    output: str, storage: StorageSettings, below: float, out: str, fmt: str = "label-studio",
    sample_above: int = 0, seed: int = 0, input_spec: Any = None,
) -> dict[str, Any]:
    """Write the rows to review to ``out`` (local or s3://); return the summary (counts, where texts came from).

    ``input_spec``: an InputSpec of the job's input, needed when the output was written without texts.
    """
    if fmt not in FORMATS:
        raise BatchlabelError(f"unknown review format {fmt!r}; use one of {', '.join(FORMATS)}")
    manifest, shards = output_shards(output, storage)
    if not shards:
        raise BatchlabelError(f"The run at {output} has no shards: nothing to export.")
    has_text = "text" in parquet_schema(shards[0], storage).names  # the footer only
    if not has_text and input_spec is None:
        raise BatchlabelError(
            f"{output} was written without its texts (output.keep_text: false), and reviewers need them: pass "
            "--input with the job's input (path, and --id-column/--text-column if not id/text), or label with "
            "output.keep_text: true."
        )
    table = concat(read_parquet_files(shards, storage, LIGHT_COLUMNS))
    chosen, summary = select_rows(table, below, sample_above, seed)
    ids = chosen.column("id").combine_chunks() if chosen.num_rows else pa.array([], pa.string())
    if has_text:
        texts = _texts_from_output(shards, storage, ids)
    else:
        texts = _texts_from_input(input_spec, storage, ids)
    rows, missing, changed = [], [], 0
    for row in chosen.to_pylist():
        text = texts.get(row["id"])
        if not isinstance(text, str):
            missing.append(row["id"])
            continue
        if not has_text and row.get("text_hash") and text_hash(text) != row["text_hash"]:
            changed += 1
        rows.append({"id": row["id"], "text": text, "label": row["label"], "confidence": float(row["confidence"]),
                     "reason": row["reason"], "fingerprint": row.get("labeler_fingerprint"), "output": output})
    storage.write_bytes(out, _encode(rows, fmt))
    return {
        **summary, "below": below, "sample_above": sample_above, "seed": seed, "exported": len(rows),
        "texts_from": "output" if has_text else "input", "changed_texts": changed,
        "missing_texts": {"rows": len(missing), "examples": missing[:10]},
        "labels": manifest.get("labels", []), "format": fmt, "file": out,
    }


def _encode(rows: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "label-studio":
        return json.dumps([labelstudio.task(row) for row in rows], indent=1, ensure_ascii=False).encode()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"id": row["id"], "text": row["text"], "predicted_label": row["label"],
                         "confidence": f"{row['confidence']:.6f}", "reason": row["reason"], "output": row["output"],
                         "reviewed_label": ""})
    return buffer.getvalue().encode()
