"""Format-level reading: Parquet footers and row groups, CSV/JSONL heads, byte ranges and streams, the split.

``input.split`` uses a vectorised, salted 64-bit SipHash of the id string (pandas ``hash_array``): stable
across runs, machines and file layouts. (docs/design.md, "Data path: planning from metadata")
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchlabel.config import InputSpec, SplitSpec
from batchlabel.errors import InputError
from batchlabel.io.shards import SAMPLE_BYTES, InputFile, Shard
from batchlabel.io.storage import StorageSettings

TEXT_CHUNK_BYTES = 1 << 24


def read_error(file: InputFile, err: BaseException) -> InputError:
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    return InputError(f"Cannot read {file.format} file {file.url}: {message}")


def open_parquet(file: InputFile, storage: StorageSettings):
    """A ``pyarrow.parquet.ParquetFile`` (reads the footer only; later reads are ranged)."""
    import pyarrow.parquet as pq

    try:
        fs, path = storage.resolve(file.url)
        return pq.ParquetFile(fs.open_input_file(path))
    except (pa.ArrowInvalid, OSError) as err:
        raise read_error(file, err) from None


def id_hashes(ids: pa.Array, salt: str) -> np.ndarray:
    """Salted, stable 64-bit hashes of id strings (vectorised SipHash-2-4 keyed by the salt)."""
    import pandas as pd

    key = hashlib.blake2b(salt.encode(), digest_size=8).hexdigest()  # 16 characters: the SipHash key
    values = np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object)
    return pd.util.hash_array(values, hash_key=key, categorize=False)


def in_split(ids: pa.Array, split: SplitSpec | None) -> pa.Array:
    """Boolean mask: which ids fall in the configured part of a stable hash split."""
    if split is None:
        return pa.array(np.ones(len(ids), dtype=bool))
    ids = pc.cast(ids, pa.string()) if not pa.types.is_string(ids.type) else ids
    unit = (id_hashes(ids, split.salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    train = unit < split.fraction
    return pa.array(train if split.part == "train" else ~train)


def normalised_ids(table: pa.Table, spec: InputSpec, where: str) -> pa.Array:
    ids = table.column(spec.id_column).combine_chunks()
    if ids.null_count:
        first = ids.is_null().to_numpy(zero_copy_only=False).argmax()
        raise InputError(f"Input {where} has {ids.null_count} row(s) with no id (first at row {first}).")
    return pc.cast(ids, pa.string()) if not pa.types.is_string(ids.type) else ids


def _convert(spec: InputSpec):
    import pyarrow.csv as pcsv

    types = {c: pa.string() for c in (spec.id_column, spec.text_column, spec.gold_column) if c}
    return pcsv.ConvertOptions(column_types=types, strings_can_be_null=False)


def _read_jsonl(data: bytes, url: str, first_line: int = 1) -> pa.Table:
    """JSON Lines, one object per line, tolerant of mixed value types across rows."""
    rows = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=first_line):
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


def _column_array(values: list) -> pa.Array:
    """An Arrow array of JSON values; mixed types fall back to strings (JSON-encoded non-strings)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string())


def text_head(spec: InputSpec, storage: StorageSettings, file: InputFile) -> tuple[bytes, int, list[str]]:
    """(first bytes of the file, offset of the first data row, column names) of a CSV/JSONL file."""
    import pyarrow.csv as pcsv

    try:
        fs, path = storage.resolve(file.url)
        with fs.open_input_file(path) as handle:
            head = handle.read_at(min(SAMPLE_BYTES, handle.size()), 0)
        if file.format == "csv":
            end = head.find(b"\n") + 1 or len(head)
            names = pcsv.read_csv(io.BytesIO(head[:end])).column_names if end else []
            return head, end, names
        first = next((line for line in head.splitlines() if line.strip()), b"")
        return head, 0, list(_read_jsonl(first, file.url).column_names) if first else []
    except (pa.ArrowInvalid, OSError) as err:
        raise read_error(file, err) from None


def iter_text_tables(spec: InputSpec, storage: StorageSettings, file: InputFile) -> Iterator[pa.Table]:
    """Parse a whole CSV/JSONL file as a stream of tables (CSV: quoted newlines allowed)."""
    import pyarrow.csv as pcsv

    try:
        fs, path = storage.resolve(file.url)
        with fs.open_input_stream(path) as stream:
            if file.format == "csv":
                reader = pcsv.open_csv(stream, read_options=pcsv.ReadOptions(block_size=TEXT_CHUNK_BYTES),
                                       parse_options=pcsv.ParseOptions(newlines_in_values=True),
                                       convert_options=_convert(spec))
                for batch in reader:
                    yield pa.Table.from_batches([batch])
                return
            rest, line = b"", 1
            while chunk := stream.read(TEXT_CHUNK_BYTES):
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                yield _read_jsonl(data[:cut], file.url, line)
                line += data[:cut].count(b"\n")
            if rest.strip():
                yield _read_jsonl(rest, file.url, line)
    except (pa.ArrowInvalid, OSError) as err:
        raise read_error(file, err) from None


def read_byte_range(storage: StorageSettings, url: str, start: int, stop: int, data_start: int) -> bytes:
    """The bytes of every line that starts in [start, stop) (ranged reads only)."""
    fs, path = storage.resolve(url)
    with fs.open_input_file(path) as handle:
        size = handle.size()

        def next_newline(pos: int) -> int:
            while pos < size:
                chunk = handle.read_at(min(1 << 16, size - pos), pos)
                found = chunk.find(b"\n")
                if found >= 0:
                    return pos + found
                pos += len(chunk)
            return size

        begin = start if start <= data_start else next_newline(start - 1) + 1
        if begin >= min(stop, size):
            return b""
        end = min(size, next_newline(stop - 1) + 1)
        data = handle.read_at(end - begin, begin)
    if len(data) != end - begin:
        raise OSError(f"short read of {url}: got {len(data)} of {end - begin} bytes")
    return data


def read_bytes_shard(spec: InputSpec, storage: StorageSettings, file: InputFile, shard: Shard) -> pa.Table:
    import pyarrow.csv as pcsv

    head, data_start, _ = text_head(spec, storage, file)
    try:
        data = read_byte_range(storage, file.url, shard.start, shard.stop, data_start)
        if file.format == "jsonl":
            return _read_jsonl(data, file.url) if data.strip() else pa.table({spec.id_column: pa.array([], pa.string())})
        return pcsv.read_csv(io.BytesIO(head[:data_start] + data), convert_options=_convert(spec),
                             parse_options=pcsv.ParseOptions(newlines_in_values=False))
    except (pa.ArrowInvalid, OSError) as err:
        raise read_error(file, err) from None


def text_prefix_rows(spec: InputSpec, storage: StorageSettings, file: InputFile, wanted: int) -> tuple[int, int]:
    """(raw rows, kept rows) of the shortest prefix of a text file that keeps ``wanted`` rows (or the file)."""
    raw = kept = 0
    for table in iter_text_tables(spec, storage, file):
        mask = np.asarray(in_split(normalised_ids(table, spec, file.url), spec.split))
        counts = np.cumsum(mask)
        if len(counts) and kept + counts[-1] >= wanted:
            return raw + int(np.searchsorted(counts, wanted - kept)) + 1, wanted
        raw, kept = raw + table.num_rows, kept + int(counts[-1] if len(counts) else 0)
    return raw, kept


def split_cap(spec: InputSpec, storage: StorageSettings, file: InputFile, wanted: int) -> tuple[int, int]:
    """Like ``text_prefix_rows`` for Parquet: reads only the id column, batch by batch."""
    raw = kept = 0
    try:
        for batch in open_parquet(file, storage).iter_batches(batch_size=1 << 16, columns=[spec.id_column]):
            counts = np.cumsum(np.asarray(in_split(normalised_ids(pa.Table.from_batches([batch]), spec, file.url), spec.split)))
            if len(counts) and kept + counts[-1] >= wanted:
                return raw + int(np.searchsorted(counts, wanted - kept)) + 1, wanted
            raw, kept = raw + batch.num_rows, kept + int(counts[-1] if len(counts) else 0)
    except (pa.ArrowInvalid, OSError) as err:
        raise read_error(file, err) from None
    return raw, kept
