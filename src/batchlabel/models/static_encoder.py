"""Static-embedding backend (``static``): a model2vec model distilled once from the encoder; no transformer at
label time.

``model2vec.distill`` (offline on the local model directory) runs the encoder once over its vocabulary,
reduces the token vectors with PCA (``PCA_DIMS``) and weights them (SIF); the result is cached beside the
encoder keyed by its digest (batchlabel.models.encoder_cache). Encoding a text is then: tokenise (the
encoder's own fast tokenizer, no special tokens, as model2vec does), look up the token vectors, average,
L2-normalise. The lookup and average are vectorised over the whole batch here (one gather + ``reduceat``)
rather than model2vec's per-length buckets; the maths is model2vec's ``encode``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from batchlabel.io.storage import StorageSettings
from batchlabel.models.encoder_cache import build_once, cache_dir_for, model_digest
from batchlabel.models.encoders import MAX_CHARS_PER_TOKEN, resolve_encoder
from batchlabel.registry import import_optional

PCA_DIMS = 256
DISTILL_RECIPE = f"m2v-pca{PCA_DIMS}-sif1e-4"  # part of the cache key and of the labeler identity


def static_model_dir(encoder_dir: str) -> Path:
    """The cached model2vec distillation of ``encoder_dir``, distilled (offline) if missing."""
    distillation = import_optional("model2vec.distill", "the static backend")

    def build(tmp: Path) -> None:
        model = distillation.distill(model_name=str(encoder_dir), pca_dims=PCA_DIMS, sif_coefficient=1e-4)
        model.save_pretrained(str(tmp))

    return build_once(cache_dir_for(encoder_dir) / f"static-{DISTILL_RECIPE}-{model_digest(encoder_dir)}", build)


class StaticSentenceEncoder:
    """model2vec static embeddings: mean of token vectors, L2-normalised; same interface as SentenceEncoder."""

    def __init__(self, reference: str, storage: StorageSettings, max_length: int = 256):
        model2vec = import_optional("model2vec", "the static backend")
        model = model2vec.StaticModel.from_pretrained(str(static_model_dir(resolve_encoder(reference, storage))))
        self.max_length = max_length
        self.tokenizer = model.tokenizer  # a tokenizers.Tokenizer
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.unk = model.unk_token_id
        embedding = np.asarray(model.embedding, dtype=np.float32)
        if model.token_mapping is not None:
            embedding = embedding[np.asarray(model.token_mapping)]
        if model.weights is not None:
            embedding = embedding * np.asarray(model.weights, dtype=np.float32)[:, None]
        self.embedding = np.ascontiguousarray(embedding)  # one row per token id
        self.dim = int(self.embedding.shape[1])

    def encode(self, texts: list[str], batch_size: int = 1024) -> tuple[np.ndarray, list[bool]]:
        """(n, dim) float32 L2-normalised embeddings, plus truncation flags (more than max_length tokens)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        flags: list[bool] = []
        cap = self.max_length * MAX_CHARS_PER_TOKEN
        for start in range(0, len(texts), max(batch_size, 1)):
            chunk = texts[start : start + batch_size]
            encodings = self.tokenizer.encode_batch_fast([t[:cap] for t in chunk], add_special_tokens=False)
            ids = [e.ids for e in encodings]
            if self.unk is not None:
                ids = [[i for i in row if i != self.unk] for row in ids]
            flags.extend(len(row) > self.max_length or len(t) > cap for row, t in zip(ids, chunk))
            ids = [row[: self.max_length] for row in ids]
            lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
            nonempty = np.flatnonzero(lengths)
            if not len(nonempty):
                continue
            flat = np.fromiter((i for row in ids for i in row), dtype=np.int64, count=int(lengths.sum()))
            offsets = np.concatenate([[0], np.cumsum(lengths[nonempty])[:-1]])
            sums = np.add.reduceat(self.embedding[flat], offsets, axis=0)
            out[start + nonempty] = sums / lengths[nonempty, None]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out, flags
