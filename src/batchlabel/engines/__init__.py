"""LLM engines (what runs the model), registered in one place and imported lazily inside the actor."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchlabel.engines.base import Engine
    from batchlabel.spec import EngineSpec
    from batchlabel.storage import StorageSettings

ENGINES: dict[str, str] = {
    "hf": "batchlabel.engines.hf:HFEngine",
    "vllm": "batchlabel.engines.vllm_engine:VLLMEngine",
    "openai": "batchlabel.engines.openai_engine:OpenAIEngine",
    "together": "batchlabel.engines.together_engine:TogetherEngine",
}


def engine_class(name: str) -> type["Engine"]:
    module_name, _, class_name = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_engine(spec: "EngineSpec", storage: "StorageSettings") -> "Engine":
    """Instantiate (and load) the engine named by ``spec.name``."""
    return engine_class(spec.name)(spec, storage)
