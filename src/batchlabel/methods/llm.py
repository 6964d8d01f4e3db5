"""What the prompt and score labelers share: fingerprint, preflight, engine and few-shot set-up."""

from __future__ import annotations

from batchlabel.config import JobSpec
from batchlabel.config.engines import LocalEngineSpec
from batchlabel.engines import build_engine, check_engine_installed
from batchlabel.engines.base import model_identity, resolve_model
from batchlabel.errors import BatchlabelError
from batchlabel.hashing import stable_hash
from batchlabel.io.storage import StorageSettings, is_remote
from batchlabel.methods.base import Labeler
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


class LLMLabeler(Labeler):
    """Base of the prompt and score labelers: driver-side checks, fingerprint, engine and few-shot selector."""

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
        self.storage = storage
        self.fingerprint = llm_fingerprint(spec)
