"""What the prompt and score labelers share: fingerprint, preflight, engine, few-shot set-up, and the tokens
each labeled article cost.

Token accounting: the engine keeps running totals (``Engine.usage``); every ``label`` call of an LLM labeler
takes the totals' growth since its previous call and apportions it over the call's articles, so the output
columns sum to exactly what the engine spent (re-asks, splits and a calibration pass included; a call that
raised is counted in the next call's growth). Apportioned evenly: each article gets the integer share, the
first ``remainder`` articles one token more (deterministic).
"""

from __future__ import annotations

import functools

from batchlabel.config import JobSpec
from batchlabel.config.engines import LocalEngineSpec
from batchlabel.engines import build_engine, check_engine_installed
from batchlabel.engines.base import TokenUsage, model_identity, resolve_model
from batchlabel.errors import BatchlabelError
from batchlabel.hashing import stable_hash
from batchlabel.io.storage import StorageSettings, is_remote
from batchlabel.methods.base import Labeler, LabelOutput, TokenCounts
from batchlabel.methods.prompts import PROMPT_VERSION


def llm_fingerprint(spec: JobSpec) -> str:
    """Hash of the method's outcome (its SPEED_ONLY fields and its engine's left out, the rule of
    ``JobSpec.result_hash``), the model's identity, the label set and the prompt format version."""
    engine = spec.method.engine
    identity = model_identity(engine.model) if isinstance(engine, LocalEngineSpec) else {"model": engine.model}
    return stable_hash(
        {
            "method": spec.method.outcome(),
            "model": identity,
            "labels": [label.outcome() for label in spec.labels],
            "prompt_version": PROMPT_VERSION,
        }
    )


def llm_preflight(spec: JobSpec, storage: StorageSettings) -> None:
    """Model, engine package and few-shot source exist (driver-side, no model load; s3:// models are checked
    in the actor)."""
    engine = spec.method.engine
    if isinstance(engine, LocalEngineSpec) and not is_remote(engine.model):
        resolve_model(engine.model, storage)
    few_shot = getattr(spec.method, "few_shot", None)
    if few_shot is not None and not storage.exists(few_shot.source.path):
        raise BatchlabelError(f"Few-shot source {few_shot.source.path} does not exist.")
    check_engine_installed(engine.name)


def build_selector(spec: JobSpec, storage: StorageSettings, engine):
    few_shot = getattr(spec.method, "few_shot", None)
    if few_shot is None:
        return None
    from batchlabel.methods.fewshot import FewShotSelector

    return FewShotSelector(few_shot, spec.labels, storage, clip=engine.clip)


def split_evenly(total: int, n: int) -> list[int]:
    """``total`` over ``n`` items: integer shares summing to ``total``, the first ``total % n`` one larger."""
    share, remainder = divmod(total, n)
    return [share + 1] * remainder + [share] * (n - remainder)


def apportion(usage: TokenUsage, n: int) -> TokenCounts:
    """Per-item token counts whose sums equal ``usage`` (cached <= prompt holds per item when it does in total)."""
    return TokenCounts(split_evenly(usage.prompt, n), split_evenly(usage.cached, n), split_evenly(usage.output, n))


def _counts_tokens(label):
    """Wrap a labeler's ``label``: attach the engine's token growth since the previous call, apportioned."""

    @functools.wraps(label)
    def counted(self: "LLMLabeler", texts: list[str]) -> LabelOutput:
        if self._counting or not texts:  # a subclass's label calling its parent's: the outer call counts
            return label(self, texts)
        self._counting = True
        try:
            result = label(self, texts)
        finally:
            self._counting = False
        now = self.engine.usage.snapshot()
        result.tokens = apportion(now - self._usage_seen, len(texts))
        self._usage_seen = now
        return result

    return counted


class LLMLabeler(Labeler):
    """Base of the prompt and score labelers: driver-side checks, fingerprint, engine and few-shot selector.

    Every subclass's ``label`` returns per-article token counts (see the module docstring)."""

    counts_tokens = True
    _counting = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "label" in cls.__dict__:
            cls.label = _counts_tokens(cls.__dict__["label"])

    @staticmethod
    def preflight(spec: JobSpec, storage: StorageSettings) -> None:
        llm_preflight(spec, storage)

    @staticmethod
    def fingerprint_for(spec: JobSpec, storage: StorageSettings) -> str:
        return llm_fingerprint(spec)

    def __init__(self, spec: JobSpec, engine=None):
        storage = StorageSettings.from_spec(spec.storage)
        self.method = spec.method
        self.names = spec.label_names
        self.engine = engine or build_engine(spec.method.engine, storage)
        # tokens spent from here on (a calibration pass in a subclass's __init__ included) go to the rows
        self._usage_seen = self.engine.usage.snapshot()
        self.storage = storage
        self.fingerprint = llm_fingerprint(spec)
