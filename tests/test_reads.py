"""Reads of committed output (io/reads.py): projected, pushed down, by row group; bytes counted at the file."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from batchlabel.io.reads import PART_ROW_GROUP_ROWS, read_parquet, read_rows_at
from batchlabel.io.sink import ShardSink, commit_shard, part_name, read_committed
from batchlabel.io.storage import StorageSettings

ROWS = 3 * PART_ROW_GROUP_ROWS
KEY = "00000-00000"
TAIL = 64 * 1024  # Arrow's first read of a Parquet file: its last 64 KiB (the footer, in one request)


class _CountingFile(io.FileIO):
    def __init__(self, path: str, handler: "CountingLocal"):
        super().__init__(path, "rb")
        self.handler = handler

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.handler.count(self.name, len(data))
        return data

    def readinto(self, buffer) -> int:
        got = super().readinto(buffer)
        self.handler.count(self.name, got or 0)
        return got


class CountingLocal(pafs.FileSystemHandler):
    """The local file system, counting the bytes read from each file (a real pyarrow filesystem)."""

    def __init__(self):
        self.local = pafs.LocalFileSystem()
        self.bytes: dict[str, int] = {}

    def count(self, path: str, size: int) -> None:
        self.bytes[path] = self.bytes.get(path, 0) + size

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def get_type_name(self):
        return "counting-local"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        return pa.PythonFile(_CountingFile(path, self), mode="r")

    def open_input_file(self, path):
        return pa.PythonFile(_CountingFile(path, self), mode="r")

    def open_output_stream(self, path, metadata):
        return self.local.open_output_stream(path)

    def open_append_stream(self, path, metadata):
        return self.local.open_append_stream(path)


@pytest.fixture
def counted(monkeypatch):
    """Every storage read of a local path goes through a CountingLocal."""
    handler = CountingLocal()
    filesystem = pafs.PyFileSystem(handler)
    real = StorageSettings.resolve

    def resolve(self, url):
        _, path = real(self, url)
        return filesystem, path

    monkeypatch.setattr(StorageSettings, "resolve", resolve)
    return handler


def _shard(rows: int = ROWS) -> pa.Table:
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnop"))
    return pa.table({
        "id": [f"doc-{i:07d}" for i in range(rows)],
        "text": ["".join(rng.choice(letters, 120)) for _ in range(rows)],
        "label": rng.choice(["a", "b"], rows), "confidence": rng.random(rows),
        "error": pa.nulls(rows, pa.string()), "labeler_fingerprint": ["f"] * rows,
        "_row": np.arange(rows) + 1000, "_shard": [0] * rows, "_shard_rows": [rows] * rows,
    })


@pytest.fixture
def committed(tmp_path):
    output = str(tmp_path / "out")
    storage = StorageSettings()
    sink = ShardSink(output, storage, [KEY], {"spec_hash": "x", "plan": "p", "labels": ["a", "b"]})
    sink.open(restart=False)
    sink.record(commit_shard(output, storage, KEY, _shard()))
    sink.finish()
    part = tmp_path / "out" / part_name(KEY)
    assert pq.ParquetFile(part).metadata.num_row_groups == 3
    return output, part


def _chunk_bytes(part, group: int, column: str) -> int:
    meta = pq.ParquetFile(part).metadata
    index = meta.schema.names.index(column)
    return meta.row_group(group).column(index).total_compressed_size


def test_id_look_up_reads_one_row_group_not_the_file(committed, counted):
    from batchlabel.io.duplicates import _id_at

    output, part = committed
    row = 1000 + PART_ROW_GROUP_ROWS + 17  # in the second row group
    assert _id_at(output, StorageSettings(), KEY, row) == f"doc-{PART_ROW_GROUP_ROWS + 17:07d}"
    got = counted.bytes[str(part)]
    assert got <= TAIL + _chunk_bytes(part, 1, "id") < part.stat().st_size / 10, (got, part.stat().st_size)
    # by id (predicate push-down on the id statistics): the row groups without the id are not read
    counted.bytes.clear()
    found = read_parquet(str(part), StorageSettings(), ["id", "text"], ids=[f"doc-{2 * PART_ROW_GROUP_ROWS + 3:07d}"])
    assert found.num_rows == 1
    one_group = _chunk_bytes(part, 2, "id") + _chunk_bytes(part, 2, "text")
    assert counted.bytes[str(part)] <= TAIL + one_group < part.stat().st_size / 2


def test_committed_reads_only_the_columns_asked_for(committed, counted):
    output, part = committed
    table = read_committed(output, StorageSettings(), columns=["label", "confidence", "tokens_prompt"])
    assert table.column_names == ["label", "confidence"] and table.num_rows == ROWS  # a missing column: left out
    asked = sum(_chunk_bytes(part, g, c) for g in range(3) for c in ("label", "confidence"))
    assert counted.bytes[str(part)] <= TAIL + asked < part.stat().st_size / 3
    assert json.loads((part.parent / "_manifest.json").read_text())["rows"] == ROWS


def test_rows_at_positions_in_any_order(committed):
    _, part = committed
    positions = [2 * PART_ROW_GROUP_ROWS + 1, 0, 5, 2 * PART_ROW_GROUP_ROWS]
    table = read_rows_at(str(part), StorageSettings(), positions, ["id", "_row", "missing"])
    assert table.column_names == ["id"]
    assert table.column("id").to_pylist() == [f"doc-{p:07d}" for p in positions]
    with pytest.raises(IndexError):
        read_rows_at(str(part), StorageSettings(), [ROWS], ["id"])
