"""`prompt` method: prompted classification with structured output, optionally many articles per prompt.

Batched prompts carry a short id per article and ask for ``{"results": [{"id", "label"}, ...]}``. A reply
that is not valid JSON, or whose ids/count do not match, makes the group split in halves, re-asked, down to
single articles; a single article is re-asked (sampled, seeded) up to ``max_retries`` times, then becomes
an error row with the last reason. An unknown label is an error, never a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from batchlabel.config import JobSpec, PromptMethod
from batchlabel.config.labels import LabelNormalizer
from batchlabel.engines.base import Constraint, Engine
from batchlabel.methods.base import LabelOutput
from batchlabel.methods.llm import LLMLabeler, build_selector
from batchlabel.methods.prompts import PromptBuilder, short_id
from batchlabel.methods.structured import batch_constraint, parse_batch, parse_single, single_constraint

RETRY_TEMPERATURE = 0.7


@dataclass
class PromptStats:
    """Counters over the labeler's life (the report can surface them)."""

    articles: int = 0
    prompts: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    splits: int = 0
    reasks: int = 0
    error_rows: int = 0
    #: prompt tokens attributed to each article (a group's prompt tokens shared among its articles)
    prompt_tokens_per_article: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        per = self.prompt_tokens_per_article
        return {
            "articles": self.articles,
            "prompts": self.prompts,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "prompt_tokens_per_article": (sum(per) / len(per)) if per else 0.0,
            "output_tokens_per_article": self.output_tokens / self.articles if self.articles else 0.0,
            "splits": self.splits,
            "reasks": self.reasks,
            "error_rows": self.error_rows,
        }


@dataclass
class _Group:
    members: list[int]  # indices into the texts of this call
    attempt: int = 0  # 0 = first ask; >0 = re-ask of a single article


class PromptLabeler(LLMLabeler):
    def __init__(self, spec: JobSpec, engine: Engine | None = None):
        assert isinstance(spec.method, PromptMethod)
        super().__init__(spec, engine)
        storage = self.storage
        self.normalizer = LabelNormalizer(spec.labels)
        self.builder = PromptBuilder(spec.labels, spec.method.instructions, spec.method.rationale)
        self.selector = build_selector(spec, storage, self.engine)
        self.batched = spec.method.items_per_prompt > 1
        # a bare-label answer needs "choice" constraints (or no constraints at all); else JSON
        self.as_json = spec.method.rationale or (spec.method.constrained and "choice" not in self.engine.formats)
        self.stats = PromptStats()
        longest = max(len(name) for name in self.names)
        self._label_tokens = longest // 2 + 4  # generous: no tokenizer is needed for remote engines

    # --- prompt pieces ---

    def _budget(self, n_items: int, batch_format: bool) -> int:
        per_item = self.method.max_new_tokens
        if per_item is None:
            per_item = self._label_tokens + (16 if (batch_format or self.as_json) else 0) + (80 if self.method.rationale else 0)
        return per_item * n_items + (12 if batch_format else 2)

    def _request(self, texts: list[str], group: _Group) -> tuple[list[dict], Constraint | None]:
        constrained = self.method.constrained
        members = [texts[i] for i in group.members]
        examples = self.selector.select_group(members) if self.selector else []
        if self.batched:
            ids = [short_id(i) for i in group.members]
            messages = self.builder.batch(list(zip(ids, members)), examples)
            return messages, batch_constraint(self.normalizer, ids, self.method.rationale) if constrained else None
        answer = "json" if self.as_json else "label"
        messages = self.builder.single(members[0], examples, answer)
        return messages, single_constraint(self.normalizer, self.method.rationale, self.as_json) if constrained else None

    # --- the ask / validate / split loop ---

    def label(self, texts: list[str]) -> LabelOutput:
        n, n_labels = len(texts), len(self.names)
        clipped, truncated = self.engine.clip(texts, self.method.engine.max_article_tokens)
        labels: list[str | None] = [None] * n
        confidence: list[float | None] = [None] * n
        errors: list[str | None] = [None] * n
        tokens = [0.0] * n
        size = self.method.items_per_prompt
        pending = [_Group(list(range(start, min(start + size, n)))) for start in range(0, n, size)]
        while pending:
            next_round: list[_Group] = []
            for attempt in sorted({g.attempt for g in pending}):
                groups = [g for g in pending if g.attempt == attempt]
                requests = [self._request(clipped, g) for g in groups]
                budget = max(self._budget(len(g.members), self.batched) for g in groups)
                generations = self.engine.generate(
                    [r[0] for r in requests],
                    [r[1] for r in requests],
                    budget,
                    temperature=RETRY_TEMPERATURE if attempt else 0.0,
                    seed=attempt if attempt else None,
                )
                for group, generation in zip(groups, generations):
                    self.stats.prompts += 1
                    self.stats.prompt_tokens += generation.prompt_tokens
                    self.stats.output_tokens += generation.output_tokens
                    if attempt:
                        self.stats.reasks += 1
                    for i in group.members:
                        tokens[i] += generation.prompt_tokens / len(group.members)
                    next_round.extend(self._accept(group, generation, labels, confidence, errors))
            pending = next_round
        probs = np.full((n, n_labels), np.nan, dtype=np.float32)
        for i, name in enumerate(labels):
            if name is not None:
                probs[i] = 0.0
                probs[i, self.names.index(name)] = confidence[i]
        self.stats.articles += n
        self.stats.error_rows += sum(e is not None for e in errors)
        self.stats.prompt_tokens_per_article.extend(tokens)
        return LabelOutput(labels, confidence, probs, errors, truncated)

    def _retry_or_fail(self, group: _Group, reason: str, errors: list) -> list[_Group]:
        if len(group.members) > 1:
            self.stats.splits += 1
            half = math.ceil(len(group.members) / 2)
            return [_Group(group.members[:half]), _Group(group.members[half:])]
        if group.attempt < self.method.max_retries:
            return [_Group(group.members, group.attempt + 1)]
        errors[group.members[0]] = f"{reason} (after {group.attempt + 1} asks)"
        return []

    def _accept(self, group: _Group, generation, labels, confidence, errors) -> list[_Group]:
        for i in group.members:
            errors[i] = None
        if generation.error:
            return self._retry_or_fail(group, f"engine error: {generation.error}", errors)
        if self.batched:
            ids = [short_id(i) for i in group.members]
            parsed = parse_batch(generation.text, self.normalizer, ids, self.method.rationale)
            if parsed.group_error:
                return self._retry_or_fail(group, parsed.group_error, errors)
            retry: list[_Group] = []
            for i, item_id in zip(group.members, ids):
                if item_id in parsed.labels:
                    labels[i], confidence[i] = parsed.labels[item_id], 1.0
                else:
                    retry.extend(self._retry_or_fail(_Group([i], group.attempt), parsed.item_errors[item_id], errors))
            return retry
        name, reason = parse_single(generation.text, self.normalizer, self.method.rationale, self.as_json)
        if name is None:
            return self._retry_or_fail(group, reason or "no label", errors)
        index = group.members[0]
        labels[index] = name
        chosen = not self.as_json and generation.logprob is not None
        confidence[index] = float(math.exp(generation.logprob)) if chosen else 1.0
        return []

    def close(self) -> None:
        self.engine.close()
