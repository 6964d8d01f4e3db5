"""Staging a night's delta: which corpus rows to (re)label tonight, written once so a retry reuses it.

In the night's partition:

    _input/corpus.parquet    (id, nightly_reason) of every corpus row tonight (reason null = kept)
    _input/delta.parquet     the rows to (re)label tonight, written last: its presence means "staged"

Both carry the staging meta (date, fingerprint, counts, pipeline) in their Parquet schema metadata.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchlabel.config import JobSpec, parse_job
from batchlabel.errors import BatchlabelError
from batchlabel.hashing import text_hash
from batchlabel.io.reads import parquet_schema, read_parquet
from batchlabel.io.storage import StorageSettings, join
from batchlabel.nightly.partitions import lookup

STAGING = "_input/delta.parquet"
CORPUS_KEYS = "_input/corpus.parquet"
REASON_COLUMN = "nightly_reason"
STAGING_META_KEY = b"batchlabel.nightly"  # stored in staged files: a file format, not a module name


REASONS = ("new", "changed_text", "fingerprint", "error")


def _differs(values: pa.ChunkedArray, other) -> pa.ChunkedArray:
    """values != other, with null equal to null (as Python's ``!=`` on None)."""
    same = pc.fill_null(pc.equal(values, other), False)
    both_null = pc.and_(pc.is_null(values), pc.is_null(other) if isinstance(other, pa.ChunkedArray) else False)
    return pc.invert(pc.or_(same, both_null))


def relabel_reasons(shard: pa.Table, previous: pa.Table, fingerprint: str, relabel_errors: bool) -> pa.Array:
    """Why each row of ``shard`` (columns id, text_hash) is re-labeled tonight; null: it keeps its latest label.

    An Arrow join with ``previous`` (``latest_keys``); the first that holds wins: "new" (no earlier label),
    "changed_text" (text hash differs), "fingerprint" (labeled by another labeler), "error" (``relabel_errors``
    and the latest label was an error).
    """
    digests = shard.select(["id", "text_hash"]).rename_columns(["id", "_digest"])
    digests = digests.cast(pa.schema([("id", pa.string()), ("_digest", pa.string())]))
    joined = lookup(digests, previous, ["text_hash", "labeler_fingerprint", "error"])
    conditions = [
        pc.is_null(joined.column("_found")),
        _differs(joined.column("text_hash"), joined.column("_digest")),
        _differs(joined.column("labeler_fingerprint"), pa.scalar(fingerprint, pa.string())),
        pc.and_(pc.is_valid(joined.column("error")), pa.scalar(bool(relabel_errors))),
    ]
    cases = pa.StructArray.from_arrays([pc.fill_null(c, False).combine_chunks() for c in conditions],
                                       names=list(REASONS))
    return pc.case_when(cases, *(pa.scalar(reason, pa.string()) for reason in REASONS))


def stage_delta(
    job: JobSpec, storage: StorageSettings, previous: pa.Table, fingerprint: str, relabel_errors: bool
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Read the corpus shard by shard; return (rows to re-label, (id, reason) of every corpus row, counts).

    ``previous`` is ``latest_keys`` of the partitions before tonight.
    """
    from batchlabel.io.source import plan_input, read_shards

    parts: list[pa.Table] = []
    keys: list[pa.Table] = []
    plan = plan_input(job.input, storage, shard_rows=100_000)
    for file in plan.files:
        for table in read_shards(job.input, storage, file, file.shards):
            digests = [text_hash(text) if isinstance(text, str) else None for text in table.column("text").to_pylist()]
            shard = pa.table({"id": table.column("id"), "text_hash": pa.array(digests, pa.string())})
            reasons = relabel_reasons(shard, previous, fingerprint, relabel_errors)
            keys.append(pa.table({"id": table.column("id"), REASON_COLUMN: reasons}))
            table = table.drop_columns(["_shard", "_row"]).append_column(REASON_COLUMN, reasons)
            parts.append(table.filter(pc.is_valid(reasons)))
    delta = pa.concat_tables(parts, promote_options="permissive")
    schema = pa.schema([("id", pa.string()), (REASON_COLUMN, pa.string())])
    corpus = pa.concat_tables([k.cast(schema) for k in keys]) if keys else schema.empty_table()
    reasons = corpus.column(REASON_COLUMN)
    counts = {reason: int(pc.sum(pc.equal(reasons, reason)).as_py() or 0) for reason in REASONS}
    counts["unchanged"] = reasons.null_count
    counts["corpus"] = plan.total_rows
    counts["relabel"] = delta.num_rows
    gone = pc.invert(pc.is_in(previous.column("id"), value_set=corpus.column("id").combine_chunks()))
    counts["removed"] = int(pc.sum(gone).as_py() or 0)
    return delta, corpus, counts


def write_staged(url: str, storage: StorageSettings, table: pa.Table, meta: dict) -> None:
    """Write ``table`` as Parquet with the staging ``meta`` in its schema metadata."""
    schema = table.schema.with_metadata({STAGING_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(schema.metadata), buffer, compression="zstd")
    storage.write_bytes(url, buffer.getvalue())


def read_staging_meta(url: str, storage: StorageSettings) -> dict:
    """The staging meta of a file written by ``write_staged``."""
    metadata = parquet_schema(url, storage).metadata or {}  # the footer only
    if STAGING_META_KEY not in metadata:
        raise BatchlabelError(f"{url} was not written by `batchlabel nightly`; remove it and run the night again.")
    return json.loads(metadata[STAGING_META_KEY])


def stage_night(
    job: JobSpec,
    storage: StorageSettings,
    partition: str,
    previous: pa.Table,
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
    return read_parquet(join(partition, CORPUS_KEYS), storage)


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
