"""`embed` method: sentence embeddings + a trained linear head."""

from __future__ import annotations

import json
from pathlib import Path

from batchlabel.config import EmbedMethod, JobSpec
from batchlabel.errors import BatchlabelError
from batchlabel.hashing import stable_hash
from batchlabel.io.storage import StorageSettings, join
from batchlabel.methods.base import Labeler, LabelOutput
from batchlabel.models.backends import backend_recipe, require_backend
from batchlabel.models.encoders import resolve_encoder
from batchlabel.models.heads import CONFIG_FILE, LinearHead


def check_head_config(spec: JobSpec, config: dict) -> None:
    """The head must have been trained for this label set, encoder and encoder backend."""
    assert isinstance(spec.method, EmbedMethod)
    if config.get("labels") != spec.label_names:
        raise BatchlabelError(
            f"The head at {spec.head_path()} was trained for labels {config.get('labels')}, "
            f"but the job's label set is {spec.label_names}. Retrain with `batchlabel train`."
        )
    encoder = config.get("encoder", spec.method.encoder)
    if encoder != spec.method.encoder:
        raise BatchlabelError(f"The head at {spec.head_path()} was trained on encoder {encoder}, not {spec.method.encoder}.")
    backend = config.get("backend", "torch")  # heads from before backends existed were trained on torch
    if backend != spec.method.backend:
        raise BatchlabelError(
            f"The head at {spec.head_path()} was trained on the {backend!r} backend's embeddings, but the job's "
            f"method.backend is {spec.method.backend!r}; embeddings differ between backends. Set backend: {backend} "
            "or train a head on this backend (`batchlabel train`, with another train.output)."
        )


class EmbedLabeler(Labeler):
    @staticmethod
    def preflight(spec: JobSpec, storage: StorageSettings) -> None:
        assert isinstance(spec.method, EmbedMethod)
        url = join(spec.head_path(), CONFIG_FILE)
        if not storage.exists(url):
            raise BatchlabelError(
                f"No trained head at {spec.head_path()} (missing {CONFIG_FILE}). Run `batchlabel train JOB.yaml` "
                "first, or set train.inline: true."
            )
        check_head_config(spec, json.loads(storage.read_bytes(url)))
        require_backend(spec.method.backend)
        if not spec.method.encoder.startswith("s3://"):
            resolve_encoder(spec.method.encoder, storage)

    @staticmethod
    def fingerprint_for(spec: JobSpec, storage: StorageSettings, head: LinearHead | None = None) -> str:
        """Hash of the method's outcome (encoder reference, max_length, backend; no SPEED_ONLY field), the
        encoder's config, the backend's export/distillation recipe, the head's weights and the label set;
        cheap, no model load. The head is identified by its weights, not by where it is stored. The torch
        backend hashes as before backends existed (its outputs stay current)."""
        assert isinstance(spec.method, EmbedMethod)
        encoder_dir = Path(resolve_encoder(spec.method.encoder, storage))
        config = encoder_dir / "config.json"
        head = head or LinearHead.load(spec.head_path(), storage)
        method = spec.method.outcome()
        method.pop("head")
        extra = {}
        if method.pop("backend") != "torch":
            extra = {"backend": spec.method.backend, "backend_recipe": backend_recipe(spec.method.backend)}
        return stable_hash(
            {
                **extra,
                "method": method,
                "encoder_config": json.loads(config.read_text()) if config.is_file() else None,
                "head": head.digest(),
                "labels": spec.label_names,
            }
        )

    def __init__(self, spec: JobSpec):
        from batchlabel.models.backends import load_encoder

        assert isinstance(spec.method, EmbedMethod)
        storage = StorageSettings.from_spec(spec.storage)
        self.labels = spec.label_names
        self.head = LinearHead.load(spec.head_path(), storage)
        check_head_config(spec, {"labels": self.head.labels, **self.head.meta})
        self.encode_batch_size = spec.method.encode_batch_size
        self.encoder = load_encoder(spec.method.encoder, storage, spec.method.max_length, spec.method.backend)
        self.fingerprint = self.fingerprint_for(spec, storage, self.head)  # the head is loaded once

    def label(self, texts: list[str]) -> LabelOutput:
        features, truncated = self.encoder.encode(texts, batch_size=self.encode_batch_size)
        probs = self.head.predict_proba(features)
        return LabelOutput.from_probs(probs, self.labels, truncated)
