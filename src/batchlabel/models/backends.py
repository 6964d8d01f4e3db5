"""Encoder backends (``method.backend``): torch (transformers fp32), onnx, onnx-int8 (ONNX Runtime) and static
(model2vec). One place maps a backend name to its encoder class, its optional packages and its recipe."""

from __future__ import annotations

from typing import Any

from batchlabel.io.storage import StorageSettings
from batchlabel.registry import require_installed

#: backend -> optional modules it needs (EXTRA_OF in batchlabel.registry names the extra)
NEEDS = {
    "torch": (),
    "onnx": ("onnxruntime", "onnxscript"),
    "onnx-int8": ("onnxruntime", "onnxscript"),
    "static": ("model2vec",),
}


def require_backend(backend: str) -> None:
    """Driver-side check that the backend's packages are installed (names the pip extra otherwise)."""
    for module in NEEDS[backend]:
        require_installed(module, f"the {backend} encoder backend")


def backend_recipe(backend: str) -> str | None:
    """What else decides a backend's numbers (export / distillation recipe), for labeler fingerprints."""
    if backend == "static":
        from batchlabel.models.static_encoder import DISTILL_RECIPE

        return DISTILL_RECIPE
    if backend.startswith("onnx"):
        from batchlabel.models.onnx_encoder import EXPORT_RECIPE

        return f"onnx-r{EXPORT_RECIPE}"
    return None


def load_encoder(reference: str, storage: StorageSettings, max_length: int, backend: str = "torch") -> Any:
    """A sentence encoder (``encode(texts, batch_size) -> (embeddings, truncated)``) on ``backend``."""
    require_backend(backend)
    if backend == "static":
        from batchlabel.models.static_encoder import StaticSentenceEncoder

        return StaticSentenceEncoder(reference, storage, max_length=max_length)
    if backend in ("onnx", "onnx-int8"):
        from batchlabel.models.onnx_encoder import OnnxSentenceEncoder

        return OnnxSentenceEncoder(reference, storage, max_length=max_length, backend=backend)
    from batchlabel.models.encoders import SentenceEncoder

    return SentenceEncoder(reference, storage, max_length=max_length)
