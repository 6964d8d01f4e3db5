"""How the work is spread over Ray: actors, CPUs/GPUs, batching, retries. None of it changes the labels."""

from __future__ import annotations

from pydantic import Field

from batchlabel.config.base import StrictModel


class RuntimeSpec(StrictModel):
    """How the work is spread over Ray. None of these fields change the labels."""

    actors: int = Field(1, ge=1, description="Labeling actors (one per GPU, or per CPU slot).")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs Ray reserves per actor (fractions allowed).")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per actor (0 = CPU only).")
    threads_per_actor: int | None = Field(
        None, ge=1, description="Torch threads per actor; default: the node's CPUs divided by actors."
    )
    batch_size: int = Field(64, ge=1, description="Rows per labeling batch (and per Ray block).")
    object_store_mb: int = Field(256, ge=80, description="Object store size of a local Ray (bounds memory).")
    workers: int = Field(
        1, ge=1, description="`batchlabel train` (lora/full): data-parallel workers; > 1 runs the same HF Trainer "
        "code in each worker of a Ray Train TorchTrainer (cpus_per_actor / gpus_per_actor per worker)."
    )
    stall_timeout_s: float = Field(900.0, gt=0, description="Fail if the pipeline makes no progress this long.")
    max_retries: int = Field(
        2, ge=0, description="Retries of a batch whose labeler call raised, before its rows become error rows."
    )
