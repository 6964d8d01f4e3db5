"""The input as a Ray Data ``Datasource``: one ``ReadTask`` per read unit of the plan (io/planning.py).

A read unit is a row group span of a Parquet file (it yields one block per shard in it) or one byte range /
whole file of a text file (one block). Each block holds the rows of exactly one shard with ``_shard_rows``,
the read task's own count of them. A shard that keeps no rows is reported to the run's ledger actor instead
(``ledger.empty(key)``), so that the driver can commit it without it reaching a writer.

Ray 2.60 API used: ``Datasource.get_read_tasks(parallelism, per_task_row_limit=None, data_context=None)``,
``ReadTask(read_fn, metadata, schema=None, per_task_row_limit=None)``, ``BlockMetadata(num_rows, size_bytes,
input_files, exec_stats)``; ``estimate_inmemory_data_size`` returns None so Ray adds no block splitting.
"""

from __future__ import annotations

from batchlabel.config import InputSpec
from batchlabel.io.shards import InputFile, InputPlan, Shard
from batchlabel.io.storage import StorageSettings


def read_units(plan: InputPlan, todo: set[str]) -> list[tuple[InputFile, list[Shard]]]:
    """(file, its shards still to do) per read unit, in plan order."""
    units = []
    for file in plan.files:
        grouped: dict[int, list[Shard]] = {}
        for shard in file.shards:
            if shard.key in todo:
                grouped.setdefault(shard.unit, []).append(shard)
        bare = InputFile(file.url, file.format, file.index, file.size, file.num_rows)
        units += [(bare, grouped[u]) for u in sorted(grouped)]
    return units


def _read(spec_json: str, storage: StorageSettings, file: InputFile, shards: list[Shard], ledger):
    from batchlabel.io.source import read_unit

    spec = InputSpec.model_validate_json(spec_json)
    for shard, table in read_unit(spec, storage, file, shards):
        if table.num_rows:
            yield table
        elif ledger is not None:
            import ray

            ray.get(ledger.empty.remote(shard.key))


def make_datasource(spec: InputSpec, storage: StorageSettings, plan: InputPlan, todo: set[str], ledger=None):
    """A ``ray.data.Datasource`` over the shards in ``todo`` (use with ``ray.data.read_datasource``)."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    units = read_units(plan, todo)
    spec_json = spec.model_dump_json()

    class ShardDatasource(Datasource):
        def get_name(self) -> str:
            return "BatchlabelShards"

        def estimate_inmemory_data_size(self):
            return None  # unknown: Ray then never splits a read task's blocks (a shard stays one block)

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for file, shards in units:
                rows = sum(s.rows for s in shards) if all(s.rows is not None for s in shards) else None
                meta = BlockMetadata(num_rows=rows, size_bytes=None, input_files=[file.url], exec_stats=None)
                tasks.append(ReadTask(lambda f=file, s=shards: _read(spec_json, storage, f, s, ledger), meta))
            return tasks

    source = ShardDatasource()
    source.num_units = len(units)
    return source
