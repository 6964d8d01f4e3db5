"""runtime.workers > 1: run a fine-tune trainer's ``fit`` (seqcls or instruct) in each worker of a Ray
Train TorchTrainer (data parallel).

Ray Train starts the workers, sets up torch.distributed (gloo on CPU, NCCL on GPU) and the RANK /
WORLD_SIZE environment; the HF Trainer inside ``fit`` picks that up and wraps the model in DDP, so the
training code is the same as with one worker. Rank 0 evaluates and publishes the artifact; its summary
comes back as the run's metrics. Checkpoints (train.checkpoint_dir) must be on a filesystem all
workers share for resume on a multi-node cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchlabel.config import JobSpec
from batchlabel.errors import BatchlabelError


def _worker_loop(config: dict[str, Any]) -> dict[str, Any]:
    import json
    import os

    import ray.train

    from batchlabel.registry import load_target

    fit = load_target(config["fit"])
    rank = ray.train.get_context().get_world_rank()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    summary = fit(config["spec_json"], progress=config["progress"] and rank == 0)
    ray.train.report({"summary": json.dumps(summary)})
    return summary


def fit_with_ray_train(spec: JobSpec, progress: bool, fit: str, storage_path: Path) -> dict[str, Any]:
    """Run ``fit`` ("module:function", ``fit(spec_json, progress) -> summary``) in ``spec.runtime.workers``
    Ray Train workers, Ray Train's own files under ``storage_path``; return rank 0's summary."""
    import json

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from batchlabel.run.ray_runtime import ray_session

    runtime = spec.runtime
    with ray_session(runtime) as cluster:
        use_gpu = runtime.gpus_per_actor > 0
        if not use_gpu and cluster.cpus < runtime.workers * runtime.cpus_per_actor:
            raise BatchlabelError(
                f"runtime.workers {runtime.workers} x cpus_per_actor {runtime.cpus_per_actor} needs more CPUs than "
                f"the Ray cluster has ({cluster.cpus:g}). Lower runtime.workers or runtime.cpus_per_actor."
            )
        resources = {"CPU": runtime.cpus_per_actor}
        if use_gpu:
            resources["GPU"] = runtime.gpus_per_actor
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"spec_json": spec.model_dump_json(), "progress": progress, "fit": fit},
            scaling_config=ScalingConfig(num_workers=runtime.workers, use_gpu=use_gpu, resources_per_worker=resources),
            run_config=RunConfig(name=f"batchlabel-{spec.name}", storage_path=str(storage_path)),
        )
        try:
            result = trainer.fit()
        except Exception as err:  # Ray wraps worker errors; surface ours as one paragraph
            current: BaseException | None = err
            while current is not None:
                if isinstance(current, BatchlabelError):
                    raise current from None
                current = current.__cause__ or current.__context__
            lines = str(err).strip().splitlines()
            raise BatchlabelError(
                f"Distributed training with {runtime.workers} Ray Train workers failed: "
                f"{lines[-1] if lines else type(err).__name__}"
            ) from None
    summary = getattr(result, "return_value", None)  # Ray Train V2: rank 0's return value
    if summary is None and result.metrics:
        summary = json.loads(result.metrics["summary"])
    if not isinstance(summary, dict):
        raise BatchlabelError("Distributed training finished without a summary from rank 0.")
    return summary
