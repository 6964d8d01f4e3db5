"""``label_dataset(ds, spec)``: the labeling stage as a step of any Ray Data pipeline.

    import ray
    from batchlabel import label_dataset
    from batchlabel.config import load_job

    ds = ray.data.read_parquet("s3://bucket/articles/")          # columns id, text (, gold)
    labeled = label_dataset(ds, load_job("jobs/r8_embed.yaml"))  # lazy, like build_llm_processor(cfg)(ds)
    labeled.write_parquet("s3://bucket/labeled/")

The stage is an actor pool (``runtime.actors`` actors, each building the labeler once) that labels each
block in slices of ``runtime.batch_size`` rows and returns one output block per input block, rows in
order. ``batchlabel run`` uses the same stage between its shard reader and its shard writer.
"""

from __future__ import annotations

from typing import Any, Iterator

import pyarrow as pa

from batchlabel.config import JobSpec, parse_job
from batchlabel.run.blocks import INTERNAL, label_in_slices, shard_runs, with_internal_columns


def as_job(spec: JobSpec | dict[str, Any]) -> JobSpec:
    """A job spec, or a mapping with at least ``labels`` and ``method`` (and optionally ``runtime``)."""
    if isinstance(spec, JobSpec):
        return spec
    data = {"name": "label_dataset", "input": {"path": "<dataset>"}, "output": {"path": "<dataset>"}, **spec}
    return parse_job(data, source="label_dataset spec")


class BlockLabeler:
    """Ray Data actor: labels a whole block in ``batch_size`` slices; one output block per input block.

    ``internal``: the block comes from batchlabel's reader (``_shard``/``_row``/``_shard_rows`` kept for the
    writer); otherwise those columns are added for the labeler and dropped from its output.
    """

    def __init__(self, spec_json: str, threads: int, internal: bool):
        from batchlabel.run.actor import LabelingActor

        self.actor = LabelingActor(spec_json, threads)
        self.batch_size = self.actor.spec.runtime.batch_size
        self.internal = internal

    def __call__(self, block: pa.Table) -> Iterator[pa.Table]:
        if not self.internal:
            block = with_internal_columns(block)
        out = label_in_slices(self.actor, block, self.batch_size)
        if self.internal:
            yield from shard_runs(out.append_column("_shard_rows", block.column("_shard_rows")))
        else:
            yield out.drop_columns(INTERNAL)


def label_dataset(ds, spec: JobSpec | dict[str, Any], *, internal: bool = False):
    """Return ``ds`` labeled (lazy ``ray.data.Dataset``): the job's labeled columns per row, rows in order.

    ``ds`` needs an ``id`` and a ``text`` column; ``gold`` (the gold label) and the spec's
    ``input.passthrough`` columns are optional / copied. ``spec``: a ``JobSpec`` or a mapping with its
    ``labels``, ``method`` and ``runtime``; input/output sections are ignored. Ray must be initialised.
    """
    from ray.data import ActorPoolStrategy

    from batchlabel.run.ray_runtime import actor_cpus, actor_threads, current_cluster

    job = as_job(spec)
    cluster = current_cluster()
    if job.method.name == "cascade":  # one actor pool per stage (run/cascade.py)
        from batchlabel.config.cascade import stage_jobs
        from batchlabel.run.cascade import StageLabeler

        stages = stage_jobs(job)
        below = [None] + [stage.min_confidence for stage in job.method.stages[:-1]]
        pools = [(StageLabeler, (stage.model_dump_json(), internal, k, len(stages), below[k], job.output.keep_text),
                  stage.runtime) for k, stage in enumerate(stages)]
    else:
        pools = [(BlockLabeler, (job.model_dump_json(), internal), job.runtime)]
    # the actors of all pools share the node: size CPUs/threads as if they were one pool of them all
    together = sum(runtime.actors for _, _, runtime in pools)
    for actor_class, (spec_json, *args), runtime in pools:
        shared = runtime.model_copy(update={"actors": together})
        ds = ds.map_batches(
            actor_class,
            fn_constructor_args=(spec_json, actor_threads(shared, cluster), *args),
            compute=ActorPoolStrategy(size=runtime.actors),
            batch_size=None,  # whole blocks: a shard read as one block is labeled as one block
            batch_format="pyarrow",
            num_cpus=min(runtime.cpus_per_actor, actor_cpus(shared, cluster)),
            num_gpus=runtime.gpus_per_actor or None,
        )
    return ds
