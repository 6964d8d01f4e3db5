"""The driver side of ``method: cascade``: preflight and fingerprint of every stage.

A cascade is not one labeler: ``run.label_dataset`` builds one actor pool per stage (``run.cascade``), each
holding that stage's own labeler. This class only gives the driver what every method gives it.
"""

from __future__ import annotations

from batchlabel.config import JobSpec
from batchlabel.config.cascade import cascade_fingerprint, stage_jobs
from batchlabel.errors import BatchlabelError
from batchlabel.methods.base import Labeler, LabelOutput


class CascadeLabeler(Labeler):
    @staticmethod
    def fingerprint_for(spec: JobSpec, storage) -> str:
        from batchlabel.methods import labeler_fingerprint

        return cascade_fingerprint(spec, [labeler_fingerprint(stage, storage) for stage in stage_jobs(spec)])

    @staticmethod
    def preflight(spec: JobSpec, storage) -> None:
        from batchlabel.methods import preflight_method

        for stage in stage_jobs(spec):
            preflight_method(stage, storage)

    def __init__(self, spec: JobSpec):
        raise BatchlabelError("a cascade has one actor pool per stage: label it with batchlabel.label_dataset or `batchlabel run`")

    def label(self, texts: list[str]) -> LabelOutput:  # pragma: no cover - never built
        raise NotImplementedError
