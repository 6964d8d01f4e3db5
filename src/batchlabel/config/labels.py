"""The label set: each label's canonical name, description and aliases, and the normaliser that maps any
known spelling (case, whitespace, quotes, aliases) to the canonical name."""

from __future__ import annotations

import re

from pydantic import Field

from batchlabel.config.base import StrictModel

_SPACES = re.compile(r"\s+")


class LabelSpec(StrictModel):
    """One label of the label set."""

    name: str = Field(min_length=1, description="Canonical label name written to the output.")
    description: str | None = Field(None, description="What the label means (used in prompts).")
    aliases: list[str] = Field(default_factory=list, description="Other spellings mapped to this label.")


def _key(text: str) -> str:
    return _SPACES.sub(" ", text.strip().strip("\"'`.").lower())


class LabelNormalizer:
    """Maps any known spelling of a label to its canonical name; unknown strings map to None."""

    def __init__(self, labels: list[LabelSpec]):
        self.names = [label.name for label in labels]
        self.lookup: dict[str, str] = {}
        for label in labels:
            for spelling in [label.name, *label.aliases]:
                self.lookup[_key(spelling)] = label.name

    def __call__(self, raw: object) -> str | None:
        if not isinstance(raw, str):
            return None
        return self.lookup.get(_key(raw))
