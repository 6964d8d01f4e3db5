"""`batchlabel train`: the trainer registry (train.method -> trainer) and dispatch.

Each trainer is ``fn(spec, progress) -> TrainResult``, imported only when its method is trained, and
comes with the file whose presence at ``train.output`` means the model is already there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from batchlabel.errors import BatchlabelError
from batchlabel.io.storage import StorageSettings, join
from batchlabel.models.classifier_artifact import MARKER_FILE
from batchlabel.models.heads import CONFIG_FILE
from batchlabel.registry import Registry
from batchlabel.training.result import TrainResult

if TYPE_CHECKING:
    from batchlabel.config import JobSpec

#: train.method -> (trainer "module:function", the marker file a finished model has at train.output)
_TRAINERS: dict[str, tuple[str, str]] = {
    "head": ("batchlabel.training.head:train_head", CONFIG_FILE),
    "lora": ("batchlabel.training.seqcls:train_sequence_classifier", MARKER_FILE),
    "full": ("batchlabel.training.seqcls:train_sequence_classifier", MARKER_FILE),
    "instruct": ("batchlabel.training.instruct:train_instruct", MARKER_FILE),
}
TRAINERS = Registry("train.method", {method: target for method, (target, _) in _TRAINERS.items()})


def trainer_for(method: str) -> Callable[["JobSpec", bool], TrainResult]:
    """The trainer of ``method``; an unknown method lists the valid ones."""
    return TRAINERS.load(method)


def marker_file(method: str) -> str:
    """The file a finished model of ``method`` has at train.output."""
    if method not in _TRAINERS:
        TRAINERS.load(method)  # raises the unknown-method error
    return _TRAINERS[method][1]


def train_model(spec: "JobSpec", progress: bool = True) -> TrainResult:
    """Train the model of ``spec.train`` with the trainer of its method."""
    if spec.train is None:
        raise BatchlabelError("The job spec has no train section: add one (see jobs/reuters_embed.yaml).")
    from batchlabel.config.cascade import trained_job  # a cascade: the stage the train section trains

    return trainer_for(spec.train.method)(trained_job(spec), progress)


def train_if_missing(spec: "JobSpec", progress: bool = True) -> TrainResult | None:
    """For `run` with train.inline: train unless a model already exists at train.output."""
    assert spec.train is not None
    storage = StorageSettings.from_spec(spec.storage)
    if storage.exists(join(spec.train.output, marker_file(spec.train.method))):
        return None
    return train_model(spec, progress=progress)


__all__ = ["TRAINERS", "TrainResult", "marker_file", "train_if_missing", "train_model", "trainer_for"]
