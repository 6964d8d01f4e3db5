"""Staging a night's delta: which corpus rows to (re)label tonight, written once so a retry reuses it.

In the night's partition:

    _input/corpus.parquet    (id, nightly_reason) of every corpus row tonight (reason null = kept)
    _input/delta.parquet     the rows to (re)label tonight, written last: its presence means "staged"

Both carry the staging meta (date, fingerprint, counts, pipeline) in their Parquet schema metadata.
"""

from __future__ import annotations

import io
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from batchlabel.config import JobSpec, parse_job
from batchlabel.errors import BatchlabelError
from batchlabel.hashing import text_hash
from batchlabel.io.storage import StorageSettings, join

STAGING = "_input/delta.parquet"
CORPUS_KEYS = "_input/corpus.parquet"
REASON_COLUMN = "nightly_reason"
STAGING_META_KEY = b"batchlabel.nightly"  # stored in staged files: a file format, not a module name


def relabel_reason(before: tuple | None, digest: str | None, fingerprint: str, relabel_errors: bool) -> str | None:
    """Why a corpus row is re-labeled tonight (None: it keeps its latest label ``before``)."""
    if before is None:
        return "new"
    if before[0] != digest:
        return "changed_text"
    if before[1] != fingerprint:
        return "fingerprint"
    if relabel_errors and before[3] is not None:
        return "error"
    return None


def stage_delta(
    job: JobSpec, storage: StorageSettings, previous: dict[str, tuple], fingerprint: str, relabel_errors: bool
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Read the corpus shard by shard; return (rows to re-label, (id, reason) of every corpus row, counts).

    ``previous`` is ``latest_keys`` of the partitions before tonight.
    """
    from batchlabel.io.source import plan_input, read_shards

    counts = Counter({"new": 0, "changed_text": 0, "fingerprint": 0, "error": 0, "unchanged": 0})
    parts: list[pa.Table] = []
    all_ids: list[str] = []
    all_reasons: list[str | None] = []
    plan = plan_input(job.input, storage, shard_rows=100_000)
    for file in plan.files:
        for table in read_shards(job.input, storage, file, file.shards):
            ids = table.column("id").to_pylist()
            reasons = []
            for key, text in zip(ids, table.column("text").to_pylist()):
                digest = text_hash(text) if isinstance(text, str) else None
                reason = relabel_reason(previous.get(key), digest, fingerprint, relabel_errors)
                counts[reason or "unchanged"] += 1
                reasons.append(reason)
            all_ids += ids
            all_reasons += reasons
            table = table.drop_columns(["_shard", "_row"]).append_column(REASON_COLUMN, pa.array(reasons, pa.string()))
            parts.append(table.filter(pa.array([r is not None for r in reasons], pa.bool_())))
    delta = pa.concat_tables(parts, promote_options="permissive")
    corpus = pa.table({"id": pa.array(all_ids, pa.string()), REASON_COLUMN: pa.array(all_reasons, pa.string())})
    counts["corpus"] = plan.total_rows
    counts["relabel"] = delta.num_rows
    counts["removed"] = len(set(previous) - set(all_ids))
    return delta, corpus, dict(counts)


def write_staged(url: str, storage: StorageSettings, table: pa.Table, meta: dict) -> None:
    """Write ``table`` as Parquet with the staging ``meta`` in its schema metadata."""
    schema = table.schema.with_metadata({STAGING_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(schema.metadata), buffer, compression="zstd")
    storage.write_bytes(url, buffer.getvalue())


def read_staging_meta(url: str, storage: StorageSettings) -> dict:
    """The staging meta of a file written by ``write_staged``."""
    filesystem, path = storage.resolve(url)
    metadata = pq.read_schema(path, filesystem=filesystem).metadata or {}
    if STAGING_META_KEY not in metadata:
        raise BatchlabelError(f"{url} was not written by `batchlabel nightly`; remove it and run the night again.")
    return json.loads(metadata[STAGING_META_KEY])


def stage_night(
    job: JobSpec,
    storage: StorageSettings,
    partition: str,
    previous: dict[str, tuple],
    meta: dict,
    relabel_errors: bool,
) -> dict[str, int]:
    """Stage tonight's corpus keys and delta in ``partition`` (the delta last); return the counts.

    ``meta`` (date, fingerprint, pipeline) is stored with the counts added.
    """
    delta, corpus, counts = stage_delta(job, storage, previous, meta["fingerprint"], relabel_errors)
    meta = {**meta, "counts": counts}
    write_staged(join(partition, CORPUS_KEYS), storage, corpus, meta)
    write_staged(join(partition, STAGING), storage, delta, meta)  # written last: its presence means "staged"
    return counts


def read_corpus_keys(partition: str, storage: StorageSettings) -> pa.Table:
    """(id, nightly_reason) of every corpus row of the night staged in ``partition``."""
    return pq.read_table(io.BytesIO(storage.read_bytes(join(partition, CORPUS_KEYS))))


def delta_input(job: JobSpec, partition: str) -> dict:
    """The input spec (as a mapping) that labels the delta staged in ``partition``."""
    return {
        "path": join(partition, STAGING),
        "format": "parquet",
        "gold_column": "gold" if job.input.gold_column else None,
        "passthrough": [*job.input.passthrough, REASON_COLUMN],
    }


def night_job(job: JobSpec, name: str, input_spec: dict, output: str) -> JobSpec:
    """The pipeline's job re-aimed at one night: its name, input and output path; never trains inline."""
    data = job.model_dump(mode="json")
    data["name"] = name
    data["input"] = input_spec
    data["output"]["path"] = output
    if data.get("train"):
        data["train"]["inline"] = False  # the nightly driver decides when to train
    return parse_job(data, source=f"nightly job {name}")
