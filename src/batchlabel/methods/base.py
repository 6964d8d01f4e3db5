"""The interface every labeling method implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TokenCounts:
    """LLM tokens per item (aligned with the texts): prompt (cached included), cached prompt, output."""

    prompt: list[int]
    cached: list[int]
    output: list[int]

    @classmethod
    def zeros(cls, n: int) -> "TokenCounts":
        return cls([0] * n, [0] * n, [0] * n)

    def __add__(self, other: "TokenCounts") -> "TokenCounts":
        """Concatenation (the items of ``other`` after those of ``self``)."""
        return TokenCounts(self.prompt + other.prompt, self.cached + other.cached, self.output + other.output)

    def set(self, index: int, other: "TokenCounts", position: int) -> None:
        self.prompt[index] = other.prompt[position]
        self.cached[index] = other.cached[position]
        self.output[index] = other.output[position]


@dataclass
class LabelOutput:
    """Results for a list of texts, aligned with the input order.

    ``probs`` is an (n, n_labels) matrix in label-set order (rows of an errored item are NaN);
    ``errors[i]`` is None when item i was labeled. ``tokens``: what the LLM spent on each item (LLM methods;
    None for methods without an LLM).
    """

    labels: list[str | None]
    confidence: list[float | None]
    probs: np.ndarray
    errors: list[str | None]
    truncated: list[bool] = field(default_factory=list)
    tokens: TokenCounts | None = None

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
    #: whether ``label`` reports the LLM tokens each item cost (``LabelOutput.tokens``)
    counts_tokens: bool = False

    @staticmethod
    @abstractmethod
    def fingerprint_for(spec, storage) -> str:
        """The same fingerprint, computed in the driver without loading the model (used by nightly runs)."""

    @abstractmethod
    def label(self, texts: list[str]) -> LabelOutput:
        """Label non-empty texts. Row-level problems are reported in ``errors``, not raised."""
