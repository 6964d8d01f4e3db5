"""Label-set helpers: normalise raw strings (case, whitespace, aliases) to canonical label names."""

from __future__ import annotations

import re

from batchlabel.spec import LabelSpec

_SPACES = re.compile(r"\s+")


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
