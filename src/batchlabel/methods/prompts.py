"""Chat prompts for the prompt and score methods: static content first, the article(s) last.

The system message (instructions, label descriptions, answer format) and the few-shot turns are the same
for every article (unless few-shot strategy is `nearest`), so an engine's prefix cache reuses them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from batchlabel.config import LabelSpec

Messages = list[dict[str, str]]

DEFAULT_INSTRUCTIONS = "You are a careful annotator. Classify each text into exactly one of the labels below."
PROMPT_VERSION = 1  # bump when the wording below changes (it is part of the labeler fingerprint)


@dataclass(frozen=True)
class Example:
    text: str
    label: str


def short_id(index: int) -> str:
    """Short, tokenizer-friendly ids: a1, a2, ... (stable within one labeling call)."""
    return f"a{index + 1}"


class PromptBuilder:
    """Builds chat messages for one article (answer = label or JSON) or a group of articles (JSON list)."""

    def __init__(self, labels: list[LabelSpec], instructions: str | None, rationale: bool = False):
        self.labels = labels
        self.instructions = instructions or DEFAULT_INSTRUCTIONS
        self.rationale = rationale

    def _label_lines(self) -> str:
        lines = []
        for label in self.labels:
            lines.append(f"- {label.name}" + (f": {label.description}" if label.description else ""))
        return "\n".join(lines)

    def system(self, answer: str) -> str:
        """answer: 'label' (the bare label), 'json' (one object) or 'batch' (a list of {id, label})."""
        names = ", ".join(label.name for label in self.labels)
        if answer == "label":
            fmt = f"Answer with the label only, exactly as written: one of {names}."
        elif answer == "json":
            fields = '"rationale": one short sentence, "label": the label' if self.rationale else '"label": the label'
            fmt = f"Answer with a JSON object {{{fields}}}; the label is one of {names}."
        else:
            fields = '"id", "rationale" (one short sentence), "label"' if self.rationale else '"id", "label"'
            fmt = (
                f'You get several texts, each with an id. Answer with a JSON object {{"results": [...]}} holding '
                f"exactly one entry per text, in the same order, with fields {fields}; each label is one of {names}."
            )
        return f"{self.instructions}\n\nLabels:\n{self._label_lines()}\n\n{fmt}"

    def _answer(self, label: str, answer: str) -> str:
        if answer == "label":
            return label
        value = {"rationale": "Example.", "label": label} if self.rationale else {"label": label}
        return json.dumps(value)

    def single(self, text: str, examples: list[Example], answer: str) -> Messages:
        messages: Messages = [{"role": "system", "content": self.system(answer)}]
        for example in examples:
            messages.append({"role": "user", "content": f"Text: {example.text}"})
            messages.append({"role": "assistant", "content": self._answer(example.label, answer)})
        messages.append({"role": "user", "content": f"Text: {text}"})
        return messages

    def _items(self, pairs: list[tuple[str, str]]) -> str:
        return "\n\n".join(f"[{item_id}] {text}" for item_id, text in pairs)

    def batch(self, items: list[tuple[str, str]], examples: list[Example]) -> Messages:
        """items: (short id, text). Few-shot examples form one earlier batched exchange with ids e1, e2, ..."""
        messages: Messages = [{"role": "system", "content": self.system("batch")}]
        if examples:
            pairs = [(f"e{i + 1}", ex.text) for i, ex in enumerate(examples)]
            messages.append({"role": "user", "content": self._items(pairs)})
            results = []
            for (item_id, _), ex in zip(pairs, examples):
                entry = {"id": item_id, "rationale": "Example.", "label": ex.label} if self.rationale else {"id": item_id, "label": ex.label}
                results.append(entry)
            messages.append({"role": "assistant", "content": json.dumps({"results": results})})
        messages.append({"role": "user", "content": self._items(items)})
        return messages
