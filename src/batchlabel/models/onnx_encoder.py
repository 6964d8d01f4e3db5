"""ONNX Runtime backends (``onnx``, ``onnx-int8``): a transformers model exported once to ONNX and run by ORT.

The export (``torch.onnx.export``, dynamo exporter; dynamic batch and sequence axes) includes the pooling,
so one ORT call returns what the torch path returns: L2-normalised mean-pooled sentence embeddings
(``sentence_embedding``) or a classifier's ``logits``. ``onnx-int8`` is that file after ONNX Runtime's
dynamic quantisation (int8 weights, activations quantised per call). Both are cached beside the source model
keyed by its digest (batchlabel.models.encoder_cache). ORT runs with as many intra-op threads as torch has in
this process (the actor sets them per actor, as for the torch backend). The dynamo exporter and QUInt8
weights are chosen from measurements (docs/design.md, "Encoder backends: export and int8 on this CPU").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from batchlabel.io.storage import StorageSettings
from batchlabel.models.encoder_cache import build_once, cache_dir_for, model_digest
from batchlabel.models.encoders import BatchedEncoder, resolve_encoder
from batchlabel.registry import import_optional

ONNX_FILE = "model.onnx"
EXPORT_RECIPE = 1  # bump when the export changes what the file computes
BACKENDS = ("onnx", "onnx-int8")


def _export(module_factory: Callable[[], Any], output_name: str, directory: Path) -> None:
    """Export ``module_factory()`` (inputs input_ids, attention_mask) to ``directory/model.onnx``."""
    import torch

    import_optional("onnxscript", "the onnx backends' exporter")
    module = module_factory().eval()
    ids = torch.tensor([[101, 2023, 2003, 102], [101, 2023, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            module, (ids, mask), str(directory / ONNX_FILE), input_names=["input_ids", "attention_mask"],
            output_names=[output_name], dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}), dynamo=True,
            external_data=False, verbose=False,
        )


def _quantize(source: Path, directory: Path) -> None:
    """Dynamic int8 quantisation of ``source/model.onnx`` into ``directory/model.onnx``."""
    quantization = import_optional("onnxruntime.quantization", "the onnx-int8 backend")
    quantization.quantize_dynamic(str(source / ONNX_FILE), str(directory / ONNX_FILE),
                                  weight_type=quantization.QuantType.QUInt8)


def onnx_model(model_dir: str, kind: str, backend: str, module_factory: Callable[[], Any], output_name: str,
               key: str | None = None) -> Path:
    """The cached ONNX directory for ``model_dir`` (exported, and quantised for onnx-int8), built if missing.

    ``key`` identifies the exported model (default: the digest of ``model_dir``'s files)."""
    if backend not in BACKENDS:
        raise ValueError(f"not an onnx backend: {backend}")
    import_optional("onnxruntime", f"the {backend} backend")
    key = key or model_digest(model_dir)
    root = cache_dir_for(model_dir)
    fp32 = build_once(root / f"{kind}-onnx-r{EXPORT_RECIPE}-{key}",
                      lambda tmp: _export(module_factory, output_name, tmp))
    if backend == "onnx":
        return fp32
    return build_once(root / f"{kind}-onnx-int8-r{EXPORT_RECIPE}-{key}", lambda tmp: _quantize(fp32, tmp))


def ort_session(directory: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (default: torch's count here)."""
    ort = import_optional("onnxruntime", "the onnx backends")
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(directory / ONNX_FILE), options, providers=["CPUExecutionProvider"])


def _pooled_encoder(path: str) -> Any:
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        """AutoModel + attention-masked mean pooling + L2 normalisation (as SentenceEncoder)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = AutoModel.from_pretrained(path)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return Pooled()


class OnnxSentenceEncoder(BatchedEncoder):
    """SentenceEncoder's embeddings computed by ONNX Runtime (fp32 or dynamic int8)."""

    def __init__(self, reference: str, storage: StorageSettings, max_length: int = 256, backend: str = "onnx"):
        from transformers import AutoConfig, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = resolve_encoder(reference, storage)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.dim = int(AutoConfig.from_pretrained(path).hidden_size)
        directory = onnx_model(path, "encoder", backend, lambda: _pooled_encoder(path), "sentence_embedding")
        self.session = ort_session(directory)

    def _embed_batch(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        batch, truncated = self.tokenize(texts, tensors="np")
        feeds = {"input_ids": batch["input_ids"].astype(np.int64),
                 "attention_mask": batch["attention_mask"].astype(np.int64)}
        return self.session.run(None, feeds)[0].astype(np.float32), truncated
