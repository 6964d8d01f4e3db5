"""Fine-tuning (`batchlabel train` with train.method lora | full): HF Trainer on a sequence classifier."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchlabel.spec import JobSpec
    from batchlabel.train import TrainResult


def train_classifier(spec: "JobSpec", progress: bool = True) -> "TrainResult":
    """Fine-tune train.base_model (LoRA or full) and write the artifact to train.output."""
    from batchlabel.training.seqcls import train_sequence_classifier

    return train_sequence_classifier(spec, progress=progress)


__all__ = ["train_classifier"]
