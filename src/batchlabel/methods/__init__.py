"""Labeling methods, registered in one place and imported lazily (heavy engines load in the actor)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchlabel.methods.base import Labeler
    from batchlabel.spec import JobSpec

METHODS: dict[str, str] = {
    "embed": "batchlabel.methods.embed:EmbedLabeler",
    "prompt": "batchlabel.methods.prompt:PromptLabeler",
    "score": "batchlabel.methods.score:ScoreLabeler",
    "classifier": "batchlabel.methods.classifier:ClassifierLabeler",
}


def labeler_class(spec: "JobSpec") -> type:
    """The Labeler class for ``spec.method`` (imports its module only now)."""
    from batchlabel.errors import BatchlabelError

    target = spec.method.labeler if spec.method.name == "custom" else METHODS[spec.method.name]
    module_name, _, class_name = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise BatchlabelError(f"Cannot load labeler {target}: {err}") from None


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
