"""`review import`: reviewed labels (Label Studio JSON export or the review CSV) into a gold Parquet.

The gold Parquet has the columns ``id``, ``text``, ``gold`` (string): use it as any job input with
``gold_column: gold`` (metrics in `run`/`eval`), as ``train.input`` and as a nightly pipeline's ``gold``.
Importing into an existing gold file merges: a reviewed id replaces its old row, other rows are kept.

Checks: labels are matched to the label set as the labelers match them (case, spaces, quotes:
config/labels.py); ids must be ids of the labeled output the rows were exported from. Rows with an
unknown label or id are skipped and reported (count and examples) in the summary; ``strict`` makes
them fail the import with nothing written.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchlabel.config.labels import LabelNormalizer, LabelSpec
from batchlabel.errors import BatchlabelError
from batchlabel.io.reads import read_parquet, read_parquet_files
from batchlabel.io.sink import read_manifest
from batchlabel.io.storage import StorageSettings
from batchlabel.review import labelstudio
from batchlabel.review.export import output_shards

GOLD_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("text", pa.string()), pa.field("gold", pa.string())])


def read_reviewed(data: bytes, name: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows {id, text, gold, predicted, reason, output} of a reviewed file (JSON: Label Studio; else CSV)."""
    stripped = data.lstrip()
    if stripped.startswith((b"[", b"{")):
        try:
            tasks = json.loads(data)
            return labelstudio.reviewed_rows(tasks)
        except (ValueError, AttributeError) as err:
            raise BatchlabelError(f"{name} is not a Label Studio JSON export (a list of tasks): {err}") from None
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    if not reader.fieldnames or not {"id", "text", "reviewed_label"} <= set(reader.fieldnames):
        raise BatchlabelError(
            f"{name} is neither Label Studio JSON nor a review CSV (columns id, text, reviewed_label; "
            f"found {reader.fieldnames})"
        )
    rows, counts = [], {"tasks": 0, "unreviewed": 0}
    for record in reader:
        counts["tasks"] += 1
        gold = (record.get("reviewed_label") or "").strip()
        if not gold:
            counts["unreviewed"] += 1
            continue
        rows.append({"id": record.get("id"), "text": record.get("text"), "gold": gold,
                     "predicted": record.get("predicted_label"), "reason": record.get("reason"),
                     "output": record.get("output")})
    return rows, counts


def _known_ids(output: str, storage: StorageSettings) -> set[str]:
    ids: set[str] = set()
    for part in read_parquet_files(output_shards(output, storage)[1], storage, ["id"]):
        ids.update(part.column("id").to_pylist())
    return ids


def _source(rows: list[dict[str, Any]], output: str | None, storage: StorageSettings) -> tuple[str | None, dict | None]:
    """The labeled output the rows came from (given, else recorded in the file) and its manifest."""
    recorded = sorted({row["output"] for row in rows if row.get("output")})
    if output is None and len(recorded) > 1:
        raise BatchlabelError(f"the reviewed rows come from several outputs ({', '.join(recorded)}); pass --output")
    output = output or (recorded[0] if recorded else None)
    if output is None:
        return None, None
    try:
        manifest = read_manifest(output, storage)
    except BatchlabelError:
        manifest = None
    return output, manifest


def _examples(values: list[Any]) -> dict[str, Any]:
    return {"rows": len(values), "examples": sorted({str(v) for v in values})[:10]}


def import_review(
    reviewed: str, gold: str, storage: StorageSettings, labels: list[str] | None = None,
    output: str | None = None, strict: bool = False,
) -> dict[str, Any]:
    """Read ``reviewed`` into the gold Parquet ``gold`` (merging with it when it exists); return the summary.

    ``labels``: the label set (default: the source output's); ``output``: the labeled output the rows were
    exported from (default: the one recorded in the file) whose ids the reviewed ids must be.
    """
    rows, counts = read_reviewed(storage.read_bytes(reviewed), reviewed)
    source, manifest = _source(rows, output, storage)
    if labels is None:
        if manifest is None:
            raise BatchlabelError(
                f"cannot tell the label set of {reviewed}: its source output "
                f"({source or 'not recorded'}) is not readable; pass --labels (or --output)"
            )
        labels = list(manifest["labels"])
    normalise = LabelNormalizer([LabelSpec(name=name) for name in labels])
    known = _known_ids(source, storage) if manifest is not None else None
    bad_labels, bad_ids, no_text, accepted, duplicates = [], [], [], {}, 0
    for row in rows:
        row_id = None if row["id"] in (None, "") else str(row["id"])
        name = normalise(row["gold"])
        if row_id is None or (known is not None and row_id not in known):
            bad_ids.append(row_id or "(missing id)")
        elif name is None:
            bad_labels.append(row["gold"])
        elif not isinstance(row["text"], str) or not row["text"].strip():
            no_text.append(row_id)
        else:
            duplicates += row_id in accepted  # the same id reviewed twice in the file: the later row wins
            accepted[row_id] = {**row, "id": row_id, "gold": name}
    summary: dict[str, Any] = {
        **counts, "reviewed": len(rows), "imported": len(accepted), "labels": labels, "source_output": source,
        "ids_checked": known is not None, "unknown_labels": _examples(bad_labels), "unknown_ids": _examples(bad_ids),
        "missing_text": _examples(no_text), "duplicate_ids": duplicates, "agreement": _agreement(accepted.values()),
    }
    if strict and (bad_labels or bad_ids):
        raise BatchlabelError(
            f"{len(bad_labels)} reviewed row(s) have a label outside the label set (e.g. "
            f"{summary['unknown_labels']['examples'][:3]}) and {len(bad_ids)} an id the output does not hold "
            f"(e.g. {summary['unknown_ids']['examples'][:3]}); nothing was written (--strict)"
        )
    summary.update(_merge_into(gold, storage, list(accepted.values())))
    return summary


def _agreement(rows: Any) -> dict[str, dict[str, Any]]:
    """Per export reason: reviewed rows and how many kept the predicted label (the labeler's accuracy there)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(row.get("reason") or "unknown", {"reviewed": 0, "agreed": 0})
        entry["reviewed"] += 1
        entry["agreed"] += int(row.get("predicted") == row["gold"])
    for entry in out.values():
        entry["accuracy"] = entry["agreed"] / entry["reviewed"]
    return out


def _merge_into(gold: str, storage: StorageSettings, rows: list[dict[str, Any]]) -> dict[str, Any]:
    new = pa.table({name: [row[name] for row in rows] for name in GOLD_SCHEMA.names}, schema=GOLD_SCHEMA)
    replaced = 0
    if storage.exists(gold):
        old = read_parquet(gold, storage, GOLD_SCHEMA.names)
        missing = [name for name in GOLD_SCHEMA.names if name not in old.column_names]
        if missing:
            raise BatchlabelError(f"{gold} exists but is not a gold file (no column(s) {', '.join(missing)})")
        old = old.select(GOLD_SCHEMA.names).cast(GOLD_SCHEMA)
        fresh = {row["id"] for row in rows}
        keep = [row_id not in fresh for row_id in old.column("id").to_pylist()]
        replaced = len(keep) - sum(keep)
        new = pa.concat_tables([old.filter(pa.array(keep, pa.bool_())), new])
    buffer = io.BytesIO()
    pq.write_table(new, buffer)
    storage.write_bytes(gold, buffer.getvalue())
    return {"gold_file": gold, "gold_rows": new.num_rows, "added": len(rows) - replaced, "replaced": replaced}
