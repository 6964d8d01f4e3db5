"""`classifier` method: a sequence classifier trained by `batchlabel train` (full fine-tune or LoRA adapter).

HF engine: transformers (+ peft for adapters, optionally merged into the base weights). Texts are
tokenised exactly as in training (same truncation), sorted by length and run in padded batches
under ``torch.inference_mode``; the softmax over the classification logits is the confidence.
vLLM engine: the same (merged) model on vLLM's pooling runner, fed the same token ids
(batchlabel.engines.vllm_classifier). ``backend: onnx | onnx-int8`` (engine hf): the (merged) model exported
once to ONNX (cached beside the artifact, keyed by its file digests) and run by ONNX Runtime on the same
padded, length-sorted batches (batchlabel.models.onnx_encoder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from batchlabel.config import ClassifierMethod, JobSpec
from batchlabel.errors import BatchlabelError
from batchlabel.hashing import stable_hash
from batchlabel.io.storage import StorageSettings, is_remote, local_model_dir
from batchlabel.methods.base import Labeler, LabelOutput
from batchlabel.models.backends import backend_recipe, require_backend
from batchlabel.models.encoders import resolve_encoder


def _marker(spec: JobSpec, storage: StorageSettings) -> dict[str, Any]:
    from batchlabel.models.classifier_artifact import read_marker

    marker = read_marker(spec.head_path(), storage)
    if marker.get("labels") != spec.label_names:
        raise BatchlabelError(
            f"The classifier at {spec.head_path()} was trained for labels {marker.get('labels')}, but the job's "
            f"label set is {spec.label_names}. Retrain it with `batchlabel train`."
        )
    return marker


def _base_reference(spec: JobSpec, marker: dict[str, Any]) -> str | None:
    assert isinstance(spec.method, ClassifierMethod)
    if marker.get("kind") != "lora":
        return None
    return spec.method.base_model or marker.get("base_model")


def _merges_adapter(method: ClassifierMethod) -> bool:
    """Whether a LoRA adapter is folded into its base: asked for, or needed (vLLM and the ONNX export take one
    plain model)."""
    return method.merge_adapter or method.engine == "vllm" or method.backend != "torch"


def _local_config(reference: str | None, storage: StorageSettings) -> dict | None:
    """config.json of a local base model (s3:// and hub references are identified by name only)."""
    if reference is None or is_remote(reference):
        return None
    try:
        path = Path(resolve_encoder(reference, storage)) / "config.json"
    except BatchlabelError:
        return None
    return json.loads(path.read_text()) if path.is_file() else None


class ClassifierLabeler(Labeler):
    @staticmethod
    def preflight(spec: JobSpec, storage: StorageSettings) -> None:
        marker = _marker(spec, storage)
        base = _base_reference(spec, marker)
        if base is not None and not is_remote(base):
            resolve_encoder(base, storage)
        assert isinstance(spec.method, ClassifierMethod)
        require_backend(spec.method.backend)

    @staticmethod
    def fingerprint_for(spec: JobSpec, storage: StorageSettings) -> str:
        """Hash of the method's outcome (inference settings; no SPEED_ONLY field) with the settings it leaves
        to the artifact resolved, the artifact's file digests (from its marker), base model and labels.
        The artifact is identified by its files, not by where it is stored."""
        assert isinstance(spec.method, ClassifierMethod)
        marker = _marker(spec, storage)
        base = _base_reference(spec, marker)
        method = spec.method.outcome()
        del method["model"], method["base_model"]  # locations: the files and the resolved base identify them
        method["merge_adapter"] = _merges_adapter(spec.method) if base else False
        method["max_length"] = spec.method.max_length or marker.get("max_length")
        extra = {}
        if method.pop("backend") != "torch":  # torch hashes as before backends existed
            extra = {"backend": spec.method.backend, "backend_recipe": backend_recipe(spec.method.backend)}
        return stable_hash(
            {
                **extra,
                "method": method,
                "kind": marker.get("kind"),
                "files": marker.get("files"),
                "base_model": base,
                "base_config": _local_config(base, storage),
                "labels": spec.label_names,
            }
        )

    def __init__(self, spec: JobSpec, device: str | None = None):
        import torch
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        from batchlabel.models.tokens import prepare_tokenizer

        method = spec.method
        assert isinstance(method, ClassifierMethod)
        hf_logging.disable_progress_bar()
        storage = StorageSettings.from_spec(spec.storage)
        marker = _marker(spec, storage)
        self.torch = torch
        self.labels = spec.label_names
        self.batch_size = method.batch_size
        self.max_length = int(method.max_length or marker["max_length"])
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        local = local_model_dir(spec.head_path(), storage)
        self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(local), marker.get("padding_side", "right"))
        self.vllm = self.session = self.model = None
        if method.backend != "torch":
            self.session = self._onnx_session(spec, marker, storage, local)
            self.fingerprint = self.fingerprint_for(spec, storage)
            return
        model = self._load_model(spec, marker, storage, local, merge=_merges_adapter(method))
        if method.engine == "vllm":
            from batchlabel.engines.vllm_classifier import VLLMClassifier

            self.vllm = VLLMClassifier(model, self.tokenizer, len(self.labels), self.max_length, method.dtype,
                                       gpu_memory_utilization=method.gpu_memory_utilization)
        else:
            self.model = model.to(self.device).eval()
        self.fingerprint = self.fingerprint_for(spec, storage)

    def _load_model(self, spec: JobSpec, marker: dict[str, Any], storage: StorageSettings, local: str, merge: bool):
        """The transformers classifier: a full fine-tune, or the base model with the peft adapter (merged or not)."""
        from transformers import AutoModelForSequenceClassification

        assert isinstance(spec.method, ClassifierMethod)
        dtype = getattr(self.torch, spec.method.dtype)
        if marker["kind"] == "full":
            model = AutoModelForSequenceClassification.from_pretrained(local, dtype=dtype)
        else:
            from peft import PeftModel

            base_dir = resolve_encoder(_base_reference(spec, marker) or "", storage)
            base = AutoModelForSequenceClassification.from_pretrained(
                base_dir,
                num_labels=len(self.labels),
                id2label=dict(enumerate(self.labels)),
                label2id={name: i for i, name in enumerate(self.labels)},
                ignore_mismatched_sizes=True,
                dtype=dtype,
            )
            base.config.pad_token_id = marker.get("pad_token_id", self.tokenizer.pad_token_id)
            model = PeftModel.from_pretrained(base, local)
            if merge:
                model = model.merge_and_unload()
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def _onnx_session(self, spec: JobSpec, marker: dict[str, Any], storage: StorageSettings, local: str) -> Any:
        """ORT session on the (merged) model's ONNX export, exported on first use."""
        from batchlabel.models.onnx_encoder import onnx_model, ort_session

        assert isinstance(spec.method, ClassifierMethod)
        torch = self.torch

        def logits_module() -> Any:
            model = self._load_model(spec, marker, storage, local, merge=True)

            class Logits(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.model = model

                def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                    return self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float()

            return Logits()

        base = _base_reference(spec, marker)
        key = stable_hash({"files": marker.get("files"), "base": base, "base_config": _local_config(base, storage)})
        return ort_session(onnx_model(local, "classifier", spec.method.backend, logits_module, "logits", key=key))

    def probabilities(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """(n, n_labels) softmax probabilities in label-set order, and truncation flags."""
        from batchlabel.models.tokens import tokenize

        ids, truncated = tokenize(self.tokenizer, texts, self.max_length)
        if self.vllm is not None:
            return self.vllm.probabilities(ids), truncated
        torch = self.torch
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        probs = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                if self.session is not None:
                    batch = self.tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, padding=True,
                                               return_tensors="np")
                    feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
                    probs[chunk] = torch.softmax(torch.from_numpy(self.session.run(None, feeds)[0]), -1).numpy()
                    continue
                batch = self.tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, padding=True, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = self.model(**batch).logits.float()
                probs[chunk] = torch.softmax(logits, dim=-1).cpu().numpy()
        return probs, truncated

    def label(self, texts: list[str]) -> LabelOutput:
        probs, truncated = self.probabilities(texts)
        return LabelOutput.from_probs(probs, self.labels, truncated)
