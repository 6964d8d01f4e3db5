"""Labeling methods, registered in one place and imported lazily (heavy engines load in the actor)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchlabel.methods.base import Labeler
    from batchlabel.spec import JobSpec

METHODS: dict[str, str] = {
    "embed": "batchlabel.methods.embed:EmbedLabeler",
    "classifier": "batchlabel.methods.classifier:ClassifierLabeler",
}


def build_labeler(spec: "JobSpec") -> "Labeler":
    """Instantiate the labeler for ``spec.method`` (imports its module only now)."""
    module_name, _, class_name = METHODS[spec.method.name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(spec)


def preflight_method(spec: "JobSpec", storage) -> None:
    """Driver-side checks (model files exist, label sets match) before any Ray work starts."""
    module_name, _, class_name = METHODS[spec.method.name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    check = getattr(cls, "preflight", None)
    if check is not None:
        check(spec, storage)


def labeler_fingerprint(spec: "JobSpec", storage) -> str:
    """The fingerprint the labeler will stamp on every row, computed in the driver without loading models."""
    module_name, _, class_name = METHODS[spec.method.name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.fingerprint_for(spec, storage)
