"""LLM engines (what runs the model), registered in one place and imported lazily inside the actor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchlabel.registry import Registry, import_optional, require_installed

if TYPE_CHECKING:
    from batchlabel.config import EngineSpec
    from batchlabel.engines.base import Engine
    from batchlabel.io.storage import StorageSettings

ENGINES = Registry(
    "engine",
    {
        "hf": "batchlabel.engines.hf:HFEngine",
        "vllm": "batchlabel.engines.vllm_engine:VLLMEngine",
        "openai": "batchlabel.engines.openai_engine:OpenAIEngine",
        "together": "batchlabel.engines.together_engine:TogetherEngine",
    },
)

#: the optional package (top-level module) an engine imports when it starts; hf needs only the base install
PACKAGES = {"vllm": "vllm", "openai": "openai", "together": "langchain_together"}


def engine_class(name: str) -> type["Engine"]:
    return ENGINES.load(name)


def build_engine(spec: "EngineSpec", storage: "StorageSettings") -> "Engine":
    """Instantiate (and load) the engine named by ``spec.name``."""
    return engine_class(spec.name)(spec, storage)


def engine_package(name: str) -> Any:
    """Import the optional package of engine ``name`` (a missing one names its ``batchlabel[extra]``)."""
    return import_optional(PACKAGES[name], f"the {name} engine")


def check_engine_installed(name: str) -> None:
    """Driver-side: the engine's optional package is installed (checked without importing it)."""
    if name in PACKAGES:
        require_installed(PACKAGES[name], f"the {name} engine")
