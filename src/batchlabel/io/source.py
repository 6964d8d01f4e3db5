"""Input corpus: list files, plan deterministic shards, read shards as normalised Arrow tables.

A shard is a fixed row range of one input file (`output.shard_rows` raw rows). Shard keys and
their expected row counts are computed up front by the driver from the id column alone, so the
sink knows when a shard is complete and a rerun finds the same shards (the resume unit).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from batchlabel.config import InputSpec, SplitSpec
from batchlabel.errors import InputError
from batchlabel.io.storage import StorageSettings, is_remote

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
ROW_COLUMNS = ["id", "text", "gold"]


@dataclass(frozen=True)
class Shard:
    """A committed-or-not unit of output: rows [start, stop) of one input file."""

    file_index: int
    index: int
    start: int
    stop: int
    rows: int  # rows kept after the split/limit filters

    @property
    def key(self) -> str:
        return f"{self.file_index:05d}-{self.index:05d}"


@dataclass
class InputFile:
    url: str
    format: str
    index: int
    num_rows: int = 0
    shards: list[Shard] = field(default_factory=list)


@dataclass
class InputPlan:
    files: list[InputFile]

    @property
    def shards(self) -> list[Shard]:
        return [s for f in self.files for s in f.shards]

    @property
    def total_rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def fingerprint(self) -> str:
        blob = "|".join(f"{f.url}:{f.num_rows}" for f in self.files)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def detect_format(url: str, declared: str) -> str:
    if declared != "auto":
        return declared
    lower = url.lower()
    for ext, fmt in FORMATS.items():
        if lower.endswith(ext):
            return fmt
    raise InputError(f"Cannot tell the format of {url}: set input.format to parquet, csv or jsonl.")


def list_input_files(spec: InputSpec, storage: StorageSettings) -> list[InputFile]:
    """Expand a file, directory or glob into a sorted list of input files."""
    from pyarrow import fs as pafs

    try:
        fs, path = storage.resolve(spec.path)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            urls = [spec.path]
        elif info.type == pafs.FileType.Directory:
            prefix = "s3://" if is_remote(spec.path) else ""
            entries = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            urls = sorted(
                prefix + e.path
                for e in entries
                if e.type == pafs.FileType.File
                and not e.base_name.startswith((".", "_"))
                and (spec.format != "auto" or any(e.path.lower().endswith(x) for x in FORMATS))
            )
        else:
            urls = []
    except OSError as err:
        raise InputError(f"Cannot list input {spec.path}: {err}") from None
    if not urls:
        raise InputError(f"Input {spec.path} does not exist or holds no parquet/csv/jsonl files.")
    return [InputFile(url=u, format=detect_format(u, spec.format), index=i) for i, u in enumerate(urls)]


def read_file(file: InputFile, storage: StorageSettings, columns: list[str] | None = None) -> pa.Table:
    """Read one whole input file as an Arrow table (optionally only some columns)."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        if file.format == "parquet":
            fs, path = storage.resolve(file.url)
            return pq.read_table(path, filesystem=fs, columns=columns)
        data = storage.read_bytes(file.url)
        if file.format == "csv":
            convert = pcsv.ConvertOptions(include_columns=columns, strings_can_be_null=False)
            read = pcsv.ReadOptions(block_size=1 << 24)
            parse = pcsv.ParseOptions(newlines_in_values=True)
            table = pcsv.read_csv(io.BytesIO(data), read_options=read, parse_options=parse, convert_options=convert)
        else:
            table = _read_jsonl(data, file.url)
            if columns:
                table = table.select([c for c in columns if c in table.column_names])
        return table
    except (pa.ArrowInvalid, OSError, KeyError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"Cannot read {file.format} file {file.url}: {message}") from None


def _column_array(values: list) -> pa.Array:
    """An Arrow array of JSON values; mixed types fall back to strings (JSON-encoded non-strings)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string())


def _read_jsonl(data: bytes, url: str) -> pa.Table:
    """JSON Lines, one object per line, tolerant of mixed value types across rows."""
    rows = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"Cannot read jsonl file {url}: line {number} is not valid JSON ({err.msg}).") from None
        if not isinstance(row, dict):
            raise InputError(f"Cannot read jsonl file {url}: line {number} is not a JSON object.")
        rows.append(row)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return pa.table({name: _column_array([row.get(name) for row in rows]) for name in names})


def column_names(file: InputFile, storage: StorageSettings) -> list[str]:
    """Column names of a Parquet input file, from its footer (no data read)."""
    import pyarrow.parquet as pq

    try:
        fs, path = storage.resolve(file.url)
        return pq.read_schema(path, filesystem=fs).names
    except (pa.ArrowInvalid, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"Cannot read parquet file {file.url}: {message}") from None


def in_split(ids: pa.Array, split: SplitSpec | None) -> pa.Array:
    """Boolean mask: which ids fall in the configured part of a stable hash split."""
    if split is None:
        return pa.array([True] * len(ids))
    salt = split.salt.encode()
    keep_train = split.part == "train"
    mask = []
    for value in ids.to_pylist():
        digest = hashlib.blake2b(salt + str(value).encode(), digest_size=8).digest()
        is_train = int.from_bytes(digest, "big") / 2**64 < split.fraction
        mask.append(is_train == keep_train)
    return pa.array(mask)


def plan_input(spec: InputSpec, storage: StorageSettings, shard_rows: int) -> InputPlan:
    """Find files, check the id column, and cut each file into deterministic shards."""
    files = list_input_files(spec, storage)
    seen: dict[str, str] = {}
    remaining = spec.limit
    for file in files:
        whole = None if file.format == "parquet" else read_file(file, storage)
        names = column_names(file, storage) if whole is None else whole.column_names
        for column in (spec.id_column, spec.text_column):
            if column not in names:
                raise InputError(
                    f"Input file {file.url} has no column {column!r} (columns: {', '.join(names)}). "
                    f"Set input.id_column / input.text_column to the right names."
                )
        if spec.gold_column and spec.gold_column not in names:
            raise InputError(f"Input file {file.url} has no gold column {spec.gold_column!r}.")
        missing = [c for c in spec.passthrough if c not in names]
        if missing:
            raise InputError(f"Input file {file.url} lacks passthrough column(s) {', '.join(missing)}.")
        # the driver reads only the id column of Parquet inputs (texts are read by the Ray read tasks)
        table = whole if whole is not None else read_file(file, storage, columns=[spec.id_column])
        ids = table.column(spec.id_column).combine_chunks()
        if ids.null_count:
            first = ids.is_null().to_pylist().index(True)
            raise InputError(f"Input file {file.url} has {ids.null_count} row(s) with no id (first at row {first}).")
        ids = pc.cast(ids, pa.string()) if not pa.types.is_string(ids.type) else ids
        keep = in_split(ids, spec.split).to_pylist()
        file.num_rows = len(ids)
        id_list = ids.to_pylist()
        for index, start in enumerate(range(0, file.num_rows, shard_rows)):
            stop = min(start + shard_rows, file.num_rows)
            kept = 0
            for row in range(start, stop):
                if not keep[row]:
                    continue
                if remaining is not None and remaining <= 0:
                    keep[row] = False
                    continue
                key = id_list[row]
                if key in seen:
                    raise InputError(
                        f"Duplicate id {key!r} in the input ({seen[key]} and {file.url} row {row}). "
                        "Ids must be unique so that every row is labeled exactly once."
                    )
                seen[key] = f"{file.url} row {row}"
                kept += 1
                if remaining is not None:
                    remaining -= 1
            if kept:
                file.shards.append(Shard(file.index, index, start, stop, kept))
        if remaining is not None and remaining <= 0:
            break
    plan = InputPlan(files=files)
    if plan.total_rows == 0:
        raise InputError(f"Input {spec.path} has no rows to label (after split/limit).")
    return plan


def _normalise_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Text as a string column; binary is decoded as UTF-8 with replacement, other types are cast."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return pc.cast(array, pa.large_string())
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        values = [None if v is None else v.decode("utf-8", errors="replace") for v in array.to_pylist()]
        return pa.array(values, type=pa.large_string())
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), pa.large_string())
    return pa.array([None if v is None else str(v) for v in array.to_pylist()], type=pa.large_string())


def read_shards(
    spec: InputSpec, storage: StorageSettings, file: InputFile, shards: list[Shard]
) -> Iterator[pa.Table]:
    """Yield one normalised table per shard: id, text, gold, passthrough..., _shard, _row."""
    if not shards:
        return
    table = read_file(file, storage)
    ids = table.column(spec.id_column).combine_chunks()
    ids = pc.cast(ids, pa.string()) if not pa.types.is_string(ids.type) else ids
    for shard in shards:
        part = table.slice(shard.start, shard.stop - shard.start)
        part_ids = ids.slice(shard.start, shard.stop - shard.start)
        mask = in_split(part_ids, spec.split)
        columns = {
            "id": part_ids,
            "text": _normalise_text(part.column(spec.text_column)),
            "gold": (
                pc.cast(part.column(spec.gold_column), pa.string())
                if spec.gold_column
                else pa.nulls(part.num_rows, pa.string())
            ),
        }
        for name in spec.passthrough:
            columns[name] = part.column(name)
        columns["_shard"] = pa.array([shard.key] * part.num_rows, pa.string())
        columns["_row"] = pa.array(range(shard.start, shard.stop), pa.int64())
        out = pa.table(columns).filter(mask)
        if out.num_rows > shard.rows:  # input.limit cut this shard short
            out = out.slice(0, shard.rows)
        yield out
