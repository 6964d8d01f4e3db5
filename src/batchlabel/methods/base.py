"""The interface every labeling method implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LabelOutput:
    """Results for a list of texts, aligned with the input order.

    ``probs`` is an (n, n_labels) matrix in label-set order (rows of an errored item are NaN);
    ``errors[i]`` is None when item i was labeled.
    """

    labels: list[str | None]
    confidence: list[float | None]
    probs: np.ndarray
    errors: list[str | None]
    truncated: list[bool] = field(default_factory=list)

    @classmethod
    def failed(cls, n: int, n_labels: int, reason: str) -> "LabelOutput":
        return cls(
            labels=[None] * n,
            confidence=[None] * n,
            probs=np.full((n, n_labels), np.nan, dtype=np.float32),
            errors=[reason] * n,
            truncated=[False] * n,
        )

    @classmethod
    def from_probs(cls, probs: np.ndarray, label_names: list[str], truncated: list[bool]) -> "LabelOutput":
        best = probs.argmax(axis=1)
        return cls(
            labels=[label_names[i] for i in best],
            confidence=[float(probs[row, i]) for row, i in enumerate(best)],
            probs=probs.astype(np.float32),
            errors=[None] * len(best),
            truncated=truncated,
        )


class Labeler(ABC):
    """One method × engine, held by a Ray actor for its whole life."""

    #: hash of everything that decides this labeler's results (model, head, prompt, labels, params)
    fingerprint: str

    @staticmethod
    @abstractmethod
    def fingerprint_for(spec, storage) -> str:
        """The same fingerprint, computed in the driver without loading the model (used by nightly runs)."""

    @abstractmethod
    def label(self, texts: list[str]) -> LabelOutput:
        """Label non-empty texts. Row-level problems are reported in ``errors``, not raised."""
