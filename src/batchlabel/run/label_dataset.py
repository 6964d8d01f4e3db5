"""``label_dataset(ds, spec)``: the labeling stage as a step of any Ray Data pipeline.

    import ray
    from batchlabel import label_dataset
    from batchlabel.config import load_job

    ds = ray.data.read_parquet("s3://bucket/articles/")          # columns id, text (, gold)
    labeled = label_dataset(ds, load_job("jobs/r8_embed.yaml"))  # lazy, like build_llm_processor(cfg)(ds)
    labeled.write_parquet("s3://bucket/labeled/")

The stage is an actor pool (``runtime.actors`` actors, each building the labeler once) that labels each
block in slices of ``runtime.batch_size`` rows and returns one output block per input block, rows in
order. ``batchlabel run`` uses the same stage on a stream of shard descriptors (``internal=True``): each actor
reads the shard it is handed (``run.blocks.PulledShards``), labels it and returns it for the shard writer.
Each actor has one block in flight, so a block waits for the first free actor instead of queueing behind a
busy one (docs/design.md, "Data path: shards pulled by the labeling actors").
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import pyarrow as pa

from batchlabel.config import JobSpec, parse_job
from batchlabel.run.blocks import INTERNAL, PulledShards, label_in_slices, with_internal_columns

#: blocks queued on one labeling actor: one, so that the next block goes to whichever actor frees first
TASKS_IN_FLIGHT_PER_ACTOR = 1


def as_job(spec: JobSpec | dict[str, Any]) -> JobSpec:
    """A job spec, or a mapping with at least ``labels`` and ``method`` (and optionally ``runtime``)."""
    if isinstance(spec, JobSpec):
        return spec
    data = {"name": "label_dataset", "input": {"path": "<dataset>"}, "output": {"path": "<dataset>"}, **spec}
    return parse_job(data, source="label_dataset spec")


class BlockLabeler:
    """Ray Data actor: labels a whole block in ``batch_size`` slices; one output block per input block.

    ``pulled``: (input spec JSON, storage, ledger) in ``batchlabel run``: the block is a shard descriptor, read
    here; the output keeps ``_shard``/``_row``/``_shard_rows`` for the writer, one table per shard. Otherwise
    (a user's pipeline) those columns are added for the labeler and dropped from its output.
    """

    def __init__(self, spec_json: str, threads: int, pulled: tuple | None):
        from batchlabel.run.actor import LabelingActor

        self.actor = LabelingActor(spec_json, threads)
        self.batch_size = self.actor.spec.runtime.batch_size
        self.shards = PulledShards(*pulled) if pulled else None

    def __call__(self, block: pa.Table) -> Iterator[pa.Table]:
        if self.shards is None:
            yield label_in_slices(self.actor, with_internal_columns(block), self.batch_size).drop_columns(INTERNAL)
            return
        for key, table, read_at in self.shards.tables(block):
            label_at = time.time()
            out = label_in_slices(self.actor, table, self.batch_size)
            self.shards.labeled(key, out.num_rows, read_at, label_at)
            yield out.append_column("_shard_rows", table.column("_shard_rows"))


def label_dataset(ds, spec: JobSpec | dict[str, Any], *, internal: bool = False, storage=None, ledger=None):
    """Return ``ds`` labeled (lazy ``ray.data.Dataset``): the job's labeled columns per row, rows in order.

    ``ds`` needs an ``id`` and a ``text`` column; ``gold`` (the gold label) and the spec's
    ``input.passthrough`` columns are optional / copied. ``spec``: a ``JobSpec`` or a mapping with its
    ``labels``, ``method`` and ``runtime``; input/output sections are ignored. Ray must be initialised.

    ``internal`` (``batchlabel run``): ``ds`` is the shard descriptors of ``io.datasource.shard_items``, read by
    the actors from ``spec.input`` on ``storage``; ``ledger`` is the run's ``CommitLedger`` actor.
    """
    from ray.data import ActorPoolStrategy

    from batchlabel.run.ray_runtime import actor_cpus, actor_threads, current_cluster

    job = as_job(spec)
    cluster = current_cluster()
    pulled = (job.input.model_dump_json(), storage, ledger) if internal else None
    if job.method.name == "cascade":  # one actor pool per stage (run/cascade.py)
        from batchlabel.config.cascade import stage_jobs
        from batchlabel.run.cascade import StageLabeler

        stages = stage_jobs(job)
        below = [None] + [stage.min_confidence for stage in job.method.stages[:-1]]
        pools = [(StageLabeler, (stage.model_dump_json(), pulled if k == 0 else None, internal, k, len(stages), below[k],
                                 job.output.keep_text), stage.runtime) for k, stage in enumerate(stages)]
    else:
        pools = [(BlockLabeler, (job.model_dump_json(), pulled), job.runtime)]
    # the actors of all pools share the node: size CPUs/threads as if they were one pool of them all
    together = sum(runtime.actors for _, _, runtime in pools)
    for actor_class, (spec_json, *args), runtime in pools:
        shared = runtime.model_copy(update={"actors": together})
        ds = ds.map_batches(
            actor_class,
            fn_constructor_args=(spec_json, actor_threads(shared, cluster), *args),
            compute=ActorPoolStrategy(size=runtime.actors, max_tasks_in_flight_per_actor=TASKS_IN_FLIGHT_PER_ACTOR),
            batch_size=None,  # whole blocks: a shard read as one block is labeled as one block
            batch_format="pyarrow",
            num_cpus=min(runtime.cpus_per_actor, actor_cpus(shared, cluster)),
            num_gpus=runtime.gpus_per_actor or None,
        )
    return ds
