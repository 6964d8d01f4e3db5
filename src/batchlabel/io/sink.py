"""Exactly-once output: deterministic shard files, per-shard commit markers, a manifest written last.

Layout of an output directory (local or s3://):

    part-FFFFF-SSSSS.parquet        labeled rows of shard SSSSS of input file FFFFF
    _batchlabel/run.json            what is being written (spec hash, input plan) - refuses foreign runs
    _batchlabel/shards/KEY.json     commit marker of one shard, written after its part file
    _manifest.json                  written last: the run is committed; readers trust only this
    report.json / report.md / report.html / confusion_matrix.png

A rerun skips committed shards and rewrites the others under the same names, so nothing is
duplicated; `restart=True` removes our files first.
"""

from __future__ import annotations

import io
import json
import time
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchlabel.errors import OutputError
from batchlabel.io.source import InputPlan, Shard
from batchlabel.io.storage import StorageSettings, join

STATE_DIR = "_batchlabel"
MANIFEST = "_manifest.json"
INTERNAL_COLUMNS = ["_shard", "_row"]
REPORT_FILES = ["report.json", "report.md", "report.html", "confusion_matrix.png"]


def part_name(key: str) -> str:
    return f"part-{key}.parquet"


@dataclass
class ShardCommit:
    key: str
    file: str
    rows: int
    errors: int


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
    tables = []
    for entry in manifest["shards"]:
        data = storage.read_bytes(join(output, entry["file"]))
        tables.append(pq.read_table(io.BytesIO(data), columns=columns))
    if not tables:
        raise OutputError(f"The run at {output} has no shards.")
    return pa.concat_tables(tables, promote_options="permissive")


class ShardSink:
    """Collects labeled batches by shard and commits each shard once it is complete."""

    def __init__(self, output: str, storage: StorageSettings, plan: InputPlan, run_info: dict):
        self.output = output
        self.storage = storage
        self.plan = plan
        self.run_info = run_info
        self.expected: dict[str, Shard] = {s.key: s for s in plan.shards}
        self.pending: dict[str, list[pa.Table]] = defaultdict(list)
        self.pending_rows: dict[str, int] = defaultdict(int)
        self.committed: dict[str, ShardCommit] = {}
        self.rows_written = 0

    # --- set-up ---

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
                for field in ("spec_hash", "plan"):
                    if previous.get(field) != self.run_info.get(field):
                        what = "job spec" if field == "spec_hash" else "input"
                        raise OutputError(
                            f"{self.output} holds a run of a different {what} ({field} {previous.get(field)} "
                            f"!= {self.run_info.get(field)}). Use --restart to discard it, or another output.path."
                        )
            else:
                self.storage.write_bytes(state_url, json.dumps(self.run_info, indent=2).encode())
            for url in self.storage.list_files(join(self.output, STATE_DIR, "shards")):
                marker = json.loads(self.storage.read_bytes(url))
                key = marker["key"]
                if key in self.expected and self.storage.exists(join(self.output, marker["file"])):
                    self.committed[key] = ShardCommit(**marker)
        except OSError as err:
            raise OutputError(f"Cannot write to output {self.output}: {err}") from None
        return set(self.committed)

    # --- streaming ---

    def add(self, batch: pa.Table) -> list[str]:
        """Buffer a labeled batch; commit and return the shards it completes."""
        done = []
        keys = batch.column("_shard").to_pylist()
        for key in sorted(set(keys)):
            part = batch.filter(pc.equal(batch.column("_shard"), key)) if len(set(keys)) > 1 else batch
            self.pending[key].append(part)
            self.pending_rows[key] += part.num_rows
            expected = self.expected[key].rows
            if self.pending_rows[key] > expected:
                raise OutputError(f"Shard {key} received {self.pending_rows[key]} rows, expected {expected}.")
            if self.pending_rows[key] == expected:
                self._commit(key)
                done.append(key)
        return done

    def _commit(self, key: str) -> None:
        table = pa.concat_tables(self.pending.pop(key), promote_options="permissive")
        self.pending_rows.pop(key)
        table = table.sort_by("_row")
        rows = table.num_rows
        if len(set(table.column("_row").to_pylist())) != rows:
            raise OutputError(f"Shard {key} holds duplicate rows; refusing to commit it.")
        table = table.drop_columns(INTERNAL_COLUMNS)
        errors = rows - table.column("error").null_count
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        name = part_name(key)
        self.storage.write_bytes(join(self.output, name), buffer.getvalue())
        marker = ShardCommit(key=key, file=name, rows=rows, errors=errors)
        self.storage.write_bytes(join(self.output, STATE_DIR, "shards", f"{key}.json"), json.dumps(marker.__dict__).encode())
        self.committed[key] = marker
        self.rows_written += rows

    # --- commit ---

    def finish(self, extra: dict | None = None) -> dict:
        """Write the manifest once every planned shard is committed; refuse otherwise."""
        missing = [key for key in self.expected if key not in self.committed]
        if missing or self.pending:
            raise OutputError(
                f"{len(missing)} shard(s) were not completed (e.g. {missing[:3]}); the run is not committed. "
                "Run the same command again to resume."
            )
        shards = [self.committed[key].__dict__ for key in sorted(self.committed)]
        manifest = {
            **self.run_info,
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rows": sum(s["rows"] for s in shards),
            "error_rows": sum(s["errors"] for s in shards),
            "shards": shards,
            **(extra or {}),
        }
        self.storage.write_bytes(join(self.output, MANIFEST), json.dumps(manifest, indent=2).encode())
        return manifest
