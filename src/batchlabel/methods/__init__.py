"""Labeling methods, registered in one place and imported lazily (heavy engines load in the actor)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchlabel.config import CustomMethod
from batchlabel.registry import Registry, load_target

if TYPE_CHECKING:
    from batchlabel.config import JobSpec
    from batchlabel.methods.base import Labeler

METHODS = Registry(
    "method",
    {
        "embed": "batchlabel.methods.embed:EmbedLabeler",
        "prompt": "batchlabel.methods.prompt:PromptLabeler",
        "score": "batchlabel.methods.score:ScoreLabeler",
        "classifier": "batchlabel.methods.classifier:ClassifierLabeler",
        "cascade": "batchlabel.methods.cascade:CascadeLabeler",
    },
)


def labeler_class(spec: "JobSpec") -> type:
    """The Labeler class for ``spec.method`` (imports its module only now); ``custom`` loads ``method.labeler``."""
    if isinstance(spec.method, CustomMethod):
        return load_target(spec.method.labeler, f"labeler {spec.method.labeler}")
    return METHODS.load(spec.method.name)


def build_labeler(spec: "JobSpec") -> "Labeler":
    """Instantiate the labeler for ``spec.method``."""
    return labeler_class(spec)(spec)


def preflight_method(spec: "JobSpec", storage) -> None:
    """Driver-side checks (model files exist, label sets match) before any Ray work starts."""
    check = getattr(labeler_class(spec), "preflight", None)
    if check is not None:
        check(spec, storage)


def labeler_fingerprint(spec: "JobSpec", storage) -> str:
    """The fingerprint the labeler will stamp on every row, computed in the driver without loading models."""
    return labeler_class(spec).fingerprint_for(spec, storage)
