"""Exactly-once output: deterministic shard files, per-shard commit markers, a manifest written last.

Layout of an output directory (local or s3://):

    part-FFFFF-SSSSS.parquet        labeled rows of shard SSSSS of input file FFFFF
    _batchlabel/run.json            what is being written (spec hash, input plan) - refuses foreign runs
    _batchlabel/ids/KEY.npz         the shard's id hashes and rows (the duplicate-id check reads these)
    _batchlabel/shards/KEY.json     commit marker of one shard, written after its part file
    _batchlabel/pieces/KEY/...      rows of a shard that reached the writers in parts (merged, then removed)
    _manifest.json                  written last: the run is committed; readers trust only this
    report.json / report.md / report.html / confusion_matrix.png

Shards are written and committed where their rows are (``commit_shard`` runs in Ray write tasks); the
driver only opens the output, collects the markers and writes the manifest (``ShardSink``). A shard is
committed only when its rows are exactly the rows its read task reported (count and distinct ``_row``).
A rerun skips committed shards and rewrites the others under the same names, so nothing is duplicated;
``restart=True`` removes our files first.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchlabel.errors import OutputError
from batchlabel.io.formats import id_hashes
from batchlabel.io.reads import PART_ROW_GROUP_ROWS, concat, read_parquet_files
from batchlabel.io.source import INTERNAL_COLUMNS
from batchlabel.io.storage import StorageSettings, join

STATE_DIR = "_batchlabel"
MANIFEST = "_manifest.json"
REPORT_FILES = ["report.json", "report.md", "report.html", "confusion_matrix.png"]
TOKEN_PREFIX = "tokens_"
ID_SALT = "batchlabel-ids"


def part_name(key: str) -> str:
    return f"part-{key}.parquet"


@dataclass
class ShardCommit:
    key: str
    file: str | None  # None: the shard kept no rows (nothing written)
    rows: int
    errors: int
    tokens: dict[str, int] = field(default_factory=dict)  # sums of the tokens_* columns
    fingerprints: list[str] = field(default_factory=list)


def marker_url(output: str, key: str) -> str:
    return join(output, STATE_DIR, "shards", f"{key}.json")


def ids_url(output: str, key: str) -> str:
    return join(output, STATE_DIR, "ids", f"{key}.npz")


def read_manifest(output: str, storage: StorageSettings) -> dict | None:
    """The committed run's manifest, or None when the output holds no committed run."""
    url = join(output, MANIFEST)
    try:
        if not storage.exists(url):
            return None
        return json.loads(storage.read_bytes(url))
    except OSError as err:
        raise OutputError(f"Cannot read {url}: {err}") from None


def read_committed(output: str, storage: StorageSettings, columns: list[str] | None = None) -> pa.Table:
    """All rows of a committed run (only the files its manifest lists)."""
    manifest = read_manifest(output, storage)
    if manifest is None:
        raise OutputError(
            f"{output} holds no committed batchlabel run (no {MANIFEST}); it is missing or still being written."
        )
    urls = committed_files(output, manifest)
    if not urls:
        raise OutputError(f"The run at {output} has no shards.")
    # streamed and projected (io/reads.py); a shard written before a column existed (e.g. the tokens_* columns)
    # is read without it: null there
    return concat(read_parquet_files(urls, storage, columns))


def committed_files(output: str, manifest: dict) -> list[str]:
    """URLs of the part files a committed run's manifest lists."""
    return [join(output, entry["file"]) for entry in manifest["shards"] if entry.get("file")]


def commit_shard(output: str, storage: StorageSettings, key: str, table: pa.Table) -> ShardCommit:
    """Write one complete labeled shard (part file, id hashes, then its marker); refuse an incomplete one."""
    rows = table.num_rows
    expected = int(table.column("_shard_rows")[0].as_py()) if rows else 0
    if rows != expected:
        raise OutputError(f"Shard {key} has {rows} rows, its read task reported {expected}; refusing to commit it.")
    table = table.sort_by("_row")
    row_numbers = table.column("_row").to_numpy()
    if rows > 1 and (np.diff(row_numbers) == 0).any():
        raise OutputError(f"Shard {key} holds duplicate rows; refusing to commit it.")
    ids = io.BytesIO()
    np.savez(ids, hashes=id_hashes(table.column("id").combine_chunks(), ID_SALT), rows=row_numbers)
    table = table.drop_columns([c for c in INTERNAL_COLUMNS if c in table.column_names])
    tokens = {c: int(pc.sum(table.column(c)).as_py() or 0) for c in table.column_names if c.startswith(TOKEN_PREFIX)}
    fingerprints = sorted(set(table.column("labeler_fingerprint").unique().to_pylist()) - {None, ""})
    buffer = io.BytesIO()
    # row groups of PART_ROW_GROUP_ROWS rows: the unit an id or row look-up reads (io/reads.py)
    pq.write_table(table, buffer, compression="zstd", row_group_size=PART_ROW_GROUP_ROWS)
    name = part_name(key)
    storage.write_bytes(join(output, name), buffer.getvalue())
    storage.write_bytes(ids_url(output, key), ids.getvalue())
    marker = ShardCommit(key, name, rows, rows - table.column("error").null_count, tokens, fingerprints)
    storage.write_bytes(marker_url(output, key), json.dumps(marker.__dict__).encode())
    return marker


def write_piece(output: str, storage: StorageSettings, key: str, table: pa.Table) -> str:
    """Park the rows of a shard that arrived in parts (deterministic name: a retry overwrites it)."""
    rows = table.column("_row").to_numpy()
    url = join(output, STATE_DIR, "pieces", key, f"{rows.min():012d}-{rows.max():012d}-{len(rows)}.parquet")
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_bytes(url, buffer.getvalue())
    return url


def merge_pieces(output: str, storage: StorageSettings, key: str) -> ShardCommit | None:
    """Commit a shard from its parked pieces when they hold all its rows (None otherwise); remove them."""
    urls = storage.list_files(join(output, STATE_DIR, "pieces", key))
    tables = read_parquet_files(urls, storage)
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="permissive").sort_by("_row")
    keep = np.ones(table.num_rows, dtype=bool)
    keep[1:] = np.diff(table.column("_row").to_numpy()) != 0  # a piece written twice (a retried task)
    table = table.filter(pa.array(keep))
    if table.num_rows != int(table.column("_shard_rows")[0].as_py()):
        return None
    marker = commit_shard(output, storage, key, table)
    storage.delete(join(output, STATE_DIR, "pieces", key))
    return marker


class ShardSink:
    """Driver side of the protocol: open the output, then write the manifest once every shard is committed."""

    def __init__(self, output: str, storage: StorageSettings, planned_keys: list[str], run_info: dict):
        self.output = output
        self.storage = storage
        self.planned = list(planned_keys)
        self.run_info = run_info
        self.committed: dict[str, ShardCommit] = {}

    def clear(self) -> None:
        """Remove everything a previous run of ours wrote here (for --restart)."""
        for url in self.storage.list_files(self.output):
            name = url.rsplit("/", 1)[-1]
            if name.startswith("part-") or name == MANIFEST or name in REPORT_FILES:
                self.storage.delete(url)
        self.storage.delete(join(self.output, STATE_DIR))

    def open(self, restart: bool) -> set[str]:
        """Check the output, record the run, and return the keys of shards already committed."""
        try:
            if restart:
                self.clear()
            state_url = join(self.output, STATE_DIR, "run.json")
            if self.storage.exists(state_url):
                previous = json.loads(self.storage.read_bytes(state_url))
                for name in ("spec_hash", "plan"):
                    if previous.get(name) != self.run_info.get(name):
                        what = "job spec" if name == "spec_hash" else "input"
                        raise OutputError(
                            f"{self.output} holds a run of a different {what} ({name} {previous.get(name)} "
                            f"!= {self.run_info.get(name)}). Use --restart to discard it, or another output.path."
                        )
            else:
                self.storage.write_bytes(state_url, json.dumps(self.run_info, indent=2).encode())
            planned = set(self.planned)
            for url in self.storage.list_files(join(self.output, STATE_DIR, "shards")):
                marker = ShardCommit(**json.loads(self.storage.read_bytes(url)))
                if marker.key in planned and (marker.file is None or self.storage.exists(join(self.output, marker.file))):
                    self.committed[marker.key] = marker
            self.storage.delete(join(self.output, STATE_DIR, "pieces"))  # parts of a crashed run: re-read
        except OSError as err:
            raise OutputError(f"Cannot write to output {self.output}: {err}") from None
        return set(self.committed)

    def commit_empty(self, key: str) -> None:
        """Record a shard whose rows all fell outside the split (or a byte range in which no line starts)."""
        marker = ShardCommit(key, None, 0, 0)
        self.storage.write_bytes(marker_url(self.output, key), json.dumps(marker.__dict__).encode())
        self.committed[key] = marker

    def record(self, marker: ShardCommit) -> None:
        self.committed[marker.key] = marker

    def missing(self) -> list[str]:
        return [key for key in self.planned if key not in self.committed]

    def finish(self, extra: dict | None = None) -> dict:
        """Write the manifest once every planned shard is committed; refuse otherwise."""
        missing = self.missing()
        if missing:
            raise OutputError(
                f"{len(missing)} shard(s) were not completed (e.g. {missing[:3]}); the run is not committed. "
                "Run the same command again to resume."
            )
        shards = [self.committed[key].__dict__ for key in sorted(self.committed) if self.committed[key].file]
        tokens: dict[str, int] = {}
        for entry in shards:
            for name, value in entry.get("tokens", {}).items():
                tokens[name] = tokens.get(name, 0) + value
        manifest = {
            **self.run_info,
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rows": sum(s["rows"] for s in shards),
            "error_rows": sum(s["errors"] for s in shards),
            **({"tokens": tokens} if tokens else {}),
            "shards": shards,
            **(extra or {}),
        }
        self.storage.write_bytes(join(self.output, MANIFEST), json.dumps(manifest, indent=2).encode())
        return manifest
