"""`score` method: log-probability of each label as the assistant's whole answer (or its first token).

argmax is the label, softmax over the labels is the confidence, every label's probability is kept.
With ``calibrate``, contextual calibration divides by each label's probability on content-free inputs
(docs/design.md, "Contextual calibration": SmolLM2-135M on R8 goes from 0.30 to 0.38 accuracy with it).
Variant ``label`` sums the label's own tokens without the end of turn, which charged word-prefix labels (earn,
acq) for the model wanting to go on (docs/design.md, "Label scoring: what is summed, and where the answer starts").
"""

from __future__ import annotations

import numpy as np

from batchlabel.config import JobSpec, ScoreMethod
from batchlabel.engines.base import Engine
from batchlabel.errors import BatchlabelError
from batchlabel.methods.base import LabelOutput
from batchlabel.methods.llm import LLMLabeler, build_selector
from batchlabel.methods.prompts import PromptBuilder


def log_normalize(scores: np.ndarray) -> np.ndarray:
    """Rows of log-scores → log-probabilities over the labels."""
    top = scores.max(axis=1, keepdims=True)
    return scores - (top + np.log(np.exp(scores - top).sum(axis=1, keepdims=True)))


class ScoreLabeler(LLMLabeler):
    def __init__(self, spec: JobSpec, engine: Engine | None = None):
        assert isinstance(spec.method, ScoreMethod)
        super().__init__(spec, engine)
        storage = self.storage
        if not self.engine.can_score:
            raise BatchlabelError(f"The {spec.method.engine.name} engine cannot score labels; use hf or vllm.")
        self.builder = PromptBuilder(spec.labels, spec.method.instructions)
        self.selector = build_selector(spec, storage, self.engine)
        self.first_token = spec.method.variant == "first_token"
        self.label_only = spec.method.variant == "label"
        self.prompt_tokens = 0
        self.articles = 0
        self.calibration: np.ndarray | None = None
        if spec.method.calibrate:
            content_free = list(spec.method.calibration_inputs)
            scores = log_normalize(self._scores(content_free))
            self.calibration = scores.mean(axis=0)

    def _scores(self, texts: list[str]) -> np.ndarray:
        examples = self.selector.select(texts) if self.selector else [[] for _ in texts]
        prompts = [self.builder.single(t, ex, "label") for t, ex in zip(texts, examples)]
        if self.label_only:
            return self.engine.score_labels(prompts, self.names, label_only=True)
        return self.engine.score_labels(prompts, self.names, first_token=self.first_token)

    def label(self, texts: list[str]) -> LabelOutput:
        clipped, truncated = self.engine.clip(texts, self.method.engine.max_article_tokens)
        logp = log_normalize(self._scores(clipped))
        if self.calibration is not None:
            logp = log_normalize(logp - self.calibration)
        self.articles += len(texts)
        return LabelOutput.from_probs(np.exp(logp), self.names, truncated)

    def close(self) -> None:
        self.engine.close()
