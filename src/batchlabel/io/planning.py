"""Plan the input from metadata only: list files, cut them into deterministic shards (the resume unit).

- Parquet: shards follow the row groups in the file footers (small groups joined, big ones cut every
  ``output.shard_rows`` rows); a read task covers one row group span and yields its shards.
- JSONL (and CSV with ``input.csv_newlines_in_values: false``): byte ranges of about ``shard_rows`` rows
  (row size from a sample of the file head); a range [a, b) owns every line that STARTS in it, the read
  task finds the line boundaries.
- CSV whose quoted values may hold newlines (the default): one shard per file, the file is parsed whole.
- ``input.limit``: Parquet without a split is cut from the footer row counts; otherwise the driver reads the
  prefix it needs (ids only for Parquet, about limit / split share rows) and plans row ranges over it.

No row passes through the driver otherwise. ``input.split`` is applied by the read tasks, so the number of
rows a shard keeps is reported by the read task with its rows (``rows`` here is the raw count before the
split, exact for Parquet, an estimate for byte ranges). (docs/design.md, "Data path: planning from metadata")
"""

from __future__ import annotations

from batchlabel.config import InputSpec
from batchlabel.errors import InputError
from batchlabel.io.formats import open_parquet, split_cap, text_head, text_prefix_rows
from batchlabel.io.shards import InputFile, InputPlan, Shard
from batchlabel.io.storage import StorageSettings, is_remote

LABELED_ROW_BYTES = 320  # upper bound of the in-memory bytes labeling adds to a row (ids, label, probs, hashes)
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def detect_format(url: str, declared: str) -> str:
    if declared != "auto":
        return declared
    lower = url.lower()
    for ext, fmt in FORMATS.items():
        if lower.endswith(ext):
            return fmt
    raise InputError(f"Cannot tell the format of {url}: set input.format to parquet, csv or jsonl.")


def list_input_files(spec: InputSpec, storage: StorageSettings) -> list[InputFile]:
    """Expand a file or directory into a sorted list of input files (with their sizes)."""
    from pyarrow import fs as pafs

    try:
        fs, path = storage.resolve(spec.path)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            found = [(spec.path, info.size)]
        elif info.type == pafs.FileType.Directory:
            prefix = "s3://" if is_remote(spec.path) else ""
            entries = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            found = sorted(
                (prefix + e.path, e.size)
                for e in entries
                if e.type == pafs.FileType.File
                and not e.base_name.startswith((".", "_"))
                and (spec.format != "auto" or any(e.path.lower().endswith(x) for x in FORMATS))
            )
        else:
            found = []
    except OSError as err:
        raise InputError(f"Cannot list input {spec.path}: {err}") from None
    if not found:
        raise InputError(f"Input {spec.path} does not exist or holds no parquet/csv/jsonl files.")
    return [InputFile(url=u, format=detect_format(u, spec.format), index=i, size=s or 0) for i, (u, s) in enumerate(found)]


def check_columns(spec: InputSpec, url: str, names: list[str]) -> None:
    for column in (spec.id_column, spec.text_column):
        if column not in names:
            raise InputError(
                f"Input file {url} has no column {column!r} (columns: {', '.join(names)}). "
                f"Set input.id_column / input.text_column to the right names."
            )
    if spec.gold_column and spec.gold_column not in names:
        raise InputError(f"Input file {url} has no gold column {spec.gold_column!r}.")
    missing = [c for c in spec.passthrough if c not in names]
    if missing:
        raise InputError(f"Input file {url} lacks passthrough column(s) {', '.join(missing)}.")


def parquet_groups(sizes: list[int], shard_rows: int) -> list[list[tuple[int, int]]]:
    """Cut row groups (their row counts) into read units of shards: [[(start, stop), ...], ...] in file rows.

    Consecutive small groups are joined until they hold ``shard_rows`` rows or more (one unit, one shard);
    a group of ``shard_rows`` rows or more is its own unit, cut every ``shard_rows`` rows (the last shard of
    the group shorter), so a file written as one row group is cut exactly as ``output.shard_rows`` says.
    """
    units: list[list[tuple[int, int]]] = []
    offset = pending_start = 0
    for rows in sizes:
        if rows >= shard_rows:
            if offset > pending_start:
                units.append([(pending_start, offset)])
            cuts = [*range(offset, offset + rows, shard_rows), offset + rows]
            units.append(list(zip(cuts[:-1], cuts[1:])))
            pending_start = offset + rows
        elif offset + rows - pending_start >= shard_rows:
            units.append([(pending_start, offset + rows)])
            pending_start = offset + rows
        offset += rows
    if offset > pending_start:
        units.append([(pending_start, offset)])
    return units


def _plan_parquet(spec: InputSpec, storage: StorageSettings, file: InputFile, shard_rows: int, remaining: int | None) -> int:
    """Plan one Parquet file from its footer; return how many rows (after the split) it contributes."""
    meta = open_parquet(file, storage).metadata
    check_columns(spec, file.url, meta.schema.to_arrow_schema().names)
    file.num_rows = meta.num_rows
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    row_bytes = max((meta.row_group(i).total_byte_size / max(1, sizes[i]) for i in range(len(sizes))), default=0)
    # + what labeling adds per row (ids, label, probs, hashes; the labeled block must not outgrow it either)
    file.shard_bytes = int((row_bytes + LABELED_ROW_BYTES) * min(shard_rows, max(sizes, default=0)))
    cap, kept = meta.num_rows, meta.num_rows
    if remaining is not None:
        cap, kept = split_cap(spec, storage, file, remaining) if spec.split else (min(cap, remaining),) * 2
    index = 0
    for unit, ranges in enumerate(parquet_groups(sizes, shard_rows)):
        for start, stop in ranges:
            if start >= cap:
                return kept
            stop = min(stop, cap)
            file.shards.append(Shard(file.index, index, start, stop, stop - start, "rows", unit))
            index += 1
    return kept


def _plan_text(spec: InputSpec, storage: StorageSettings, file: InputFile, shard_rows: int, remaining: int | None) -> int:
    """Plan one CSV/JSONL file; return rows (after the split) it contributes (-1: unknown, no limit)."""
    head, data_start, names = text_head(spec, storage, file)
    check_columns(spec, file.url, names)
    body = head[data_start:]
    row_bytes = max(1.0, len(body) / max(1, body.count(b"\n")))
    if remaining is not None:  # row ranges over the prefix the limit needs
        cap, kept = text_prefix_rows(spec, storage, file, remaining)
        file.num_rows = cap
        file.shard_bytes = int(2 * (row_bytes + LABELED_ROW_BYTES) * shard_rows)
        for index, start in enumerate(range(0, cap, shard_rows)):
            stop = min(start + shard_rows, cap)
            file.shards.append(Shard(file.index, index, start, stop, stop - start, "lines", index))
        return kept
    if file.format == "csv" and spec.csv_newlines_in_values:
        estimate = round((file.size - data_start) / row_bytes)
        file.shards.append(Shard(file.index, 0, 0, -1, None if estimate < 0 else estimate, "lines", 0))
        file.shard_bytes = 2 * file.size + LABELED_ROW_BYTES * (estimate if estimate > 0 else 0)
        return -1
    step = max(1 << 16, int(row_bytes * shard_rows))
    file.shard_bytes = 2 * step + LABELED_ROW_BYTES * shard_rows
    for index, start in enumerate(range(data_start, max(file.size, data_start + 1), step)):
        stop = min(start + step, file.size)
        file.shards.append(Shard(file.index, index, start, stop, max(1, round((stop - start) / row_bytes)), "bytes", index))
    return -1


def plan_input(spec: InputSpec, storage: StorageSettings, shard_rows: int) -> InputPlan:
    """Find files, check their columns from metadata, and cut them into deterministic shards."""
    files = list_input_files(spec, storage)
    remaining = spec.limit
    for file in files:
        plan_file = _plan_parquet if file.format == "parquet" else _plan_text
        kept = plan_file(spec, storage, file, shard_rows, remaining)
        if remaining is not None:
            remaining -= kept
            if remaining <= 0:
                break
    share = 1.0
    if spec.limit is not None:  # the limit prefix was counted: exact rows after the split
        raw = sum(s.rows or 0 for f in files for s in f.shards)
        share = (spec.limit - max(0, remaining or 0)) / raw if raw else 1.0
    elif spec.split is not None:
        share = spec.split.fraction if spec.split.part == "train" else 1.0 - spec.split.fraction
    known = all(s.rows is not None for f in files for s in f.shards)
    plan = InputPlan(files=files, keep_share=share, rows_exact=known and (spec.split is None or spec.limit is not None),
                     split_hash="siphash64" if spec.split else "")
    if not plan.shards or (plan.rows_exact and plan.total_rows == 0):
        raise InputError(f"Input {spec.path} has no rows to label (after split/limit).")
    return plan
