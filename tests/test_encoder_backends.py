"""Encoder backends (method.backend): torch, onnx, onnx-int8 (ONNX Runtime) and static (model2vec).

A tiny random BERT (save_pretrained, MiniLM's real tokenizer) is exported / quantised / distilled into its
own temporary directory (the cache lives beside the model), then labels real R8 rows end to end through the
embed method's head training and labeler, on every backend.
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from batchlabel.errors import BatchlabelError
from batchlabel.io.storage import StorageSettings

from conftest import embed_job

BACKENDS = ["torch", "onnx", "onnx-int8", "static"]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    from test_train_classifier import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny_encoder") / "bert")


@pytest.fixture(scope="module")
def texts(r8_small) -> list[str]:
    return pq.read_table(r8_small["test"], columns=["text"]).column("text").to_pylist()[:48]


@pytest.fixture(scope="module")
def encoded(tiny_encoder, texts) -> dict[str, tuple[np.ndarray, list[bool]]]:
    from batchlabel.models.backends import load_encoder

    return {b: load_encoder(tiny_encoder, StorageSettings(), 64, b).encode(texts, batch_size=8) for b in BACKENDS}


@pytest.mark.slow
def test_every_backend_embeds_normalised_rows_with_truncation_flags(encoded, texts):
    torch_flags = encoded["torch"][1]
    assert any(torch_flags) and not all(torch_flags)  # R8 articles: some over 64 tokens, some under
    for backend, (embeddings, flags) in encoded.items():
        assert embeddings.shape[0] == len(texts) and embeddings.dtype == np.float32, backend
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
        assert len(flags) == len(texts)
    for backend in ("onnx", "onnx-int8"):
        assert encoded[backend][1] == torch_flags  # same tokenisation and truncation as torch
    # onnx computes torch's fp32 maths (float rounding only); int8 is close, not equal
    np.testing.assert_allclose(encoded["onnx"][0], encoded["torch"][0], atol=1e-4)
    cosine = (encoded["onnx-int8"][0] * encoded["torch"][0]).sum(1)
    assert cosine.min() > 0.9 and not np.allclose(encoded["onnx-int8"][0], encoded["torch"][0], atol=1e-4)
    assert encoded["static"][0].shape[1] <= encoded["torch"][0].shape[1]


@pytest.mark.slow
def test_onnx_agrees_with_torch_on_labels(encoded, r8_small, texts):
    from conftest import R8_LABELS

    from batchlabel.models.heads import LinearHead

    gold = pq.read_table(r8_small["test"], columns=["label"]).column("label").to_pylist()[: len(texts)]
    head = LinearHead.fit(encoded["torch"][0], gold, R8_LABELS, c=10.0, max_iter=2000, seed=0)
    torch_labels = head.predict_proba(encoded["torch"][0]).argmax(1)
    assert (head.predict_proba(encoded["onnx"][0]).argmax(1) == torch_labels).all()


@pytest.mark.slow
def test_each_backend_trains_labels_and_fingerprints_apart(tiny_encoder, r8_small, tmp_path):
    from batchlabel.config import parse_job
    from batchlabel.methods.embed import EmbedLabeler
    from batchlabel.training.base import train_model

    fingerprints = {}
    texts = pq.read_table(r8_small["test"], columns=["text"]).column("text").to_pylist()[:10]
    for backend in BACKENDS:
        head = str(tmp_path / f"head_{backend}")
        spec = parse_job(embed_job(r8_small, str(tmp_path / "out"), head,
                                   method={"encoder": tiny_encoder, "backend": backend}))
        train_model(spec, progress=False)
        EmbedLabeler.preflight(spec, StorageSettings())
        labeler = EmbedLabeler(spec)
        out = labeler.label(texts)
        assert len(out.labels) == len(texts) and all(label in spec.label_names for label in out.labels)
        fingerprints[backend] = labeler.fingerprint
        if backend != "torch":  # a head trained on another backend's embeddings is refused, naming both
            other = parse_job(embed_job(r8_small, str(tmp_path / "out"), str(tmp_path / "head_torch"),
                                        method={"encoder": tiny_encoder, "backend": backend}))
            with pytest.raises(BatchlabelError, match=f"trained on the 'torch' backend.*'{backend}'"):
                EmbedLabeler.preflight(other, StorageSettings())
    assert len(set(fingerprints.values())) == len(BACKENDS)


def test_missing_backend_package_names_the_extra(monkeypatch):
    from batchlabel.models.backends import load_encoder, require_backend

    monkeypatch.setitem(sys.modules, "model2vec", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BatchlabelError, match=r"static encoder backend needs the model2vec .*batchlabel\[cpu-fast\]"):
        load_encoder("unused", StorageSettings(), 64, "static")
    with pytest.raises(BatchlabelError, match=r"onnx-int8 encoder backend needs the onnxruntime .*cpu-fast"):
        require_backend("onnx-int8")
    require_backend("torch")


def test_backend_is_an_outcome_field_and_onnx_classifier_needs_hf():
    from pydantic import ValidationError

    from batchlabel.config import ClassifierMethod, EmbedMethod

    embed = [EmbedMethod(name="embed", backend=b).outcome_hash() for b in BACKENDS]
    assert len(set(embed)) == len(BACKENDS)
    with pytest.raises(ValidationError, match="engine hf"):
        ClassifierMethod(name="classifier", engine="vllm", backend="onnx")
    with pytest.raises(ValidationError, match="float32"):
        ClassifierMethod(name="classifier", dtype="bfloat16", backend="onnx-int8")
