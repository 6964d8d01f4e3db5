"""Linear classification head on embeddings: fit (scikit-learn), save/load as safetensors + JSON."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from batchlabel.errors import BatchlabelError
from batchlabel.hashing import stable_hash
from batchlabel.io.storage import StorageSettings, join

WEIGHTS_FILE = "head.safetensors"
CONFIG_FILE = "head.json"


@dataclass
class LinearHead:
    """softmax(x @ weight.T + bias) over ``labels``."""

    weight: np.ndarray  # (n_labels, dim)
    bias: np.ndarray  # (n_labels,)
    labels: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        logits = features @ self.weight.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def digest(self) -> str:
        return stable_hash([self.weight.round(6).tolist(), self.bias.round(6).tolist(), self.labels])

    @classmethod
    def fit(
        cls, features: np.ndarray, gold: list[str], labels: list[str], c: float, max_iter: int, seed: int
    ) -> "LinearHead":
        from sklearn.linear_model import LogisticRegression

        present = sorted(set(gold), key=labels.index)
        if len(present) < 2:
            raise BatchlabelError("Training needs gold rows of at least two labels.")
        model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
        model.fit(features, np.array([labels.index(g) for g in gold]))
        # expand to the full label set: labels absent from training get a very low bias
        weight = np.zeros((len(labels), features.shape[1]), dtype=np.float32)
        bias = np.full(len(labels), -1e4, dtype=np.float32)
        coef = model.coef_ if len(model.classes_) > 2 else np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2])
        intercept = (
            model.intercept_
            if len(model.classes_) > 2
            else np.array([-model.intercept_[0] / 2, model.intercept_[0] / 2])
        )
        for row, class_index in enumerate(model.classes_):
            weight[class_index] = coef[row]
            bias[class_index] = intercept[row]
        return cls(weight=weight, bias=bias, labels=list(labels))

    def save(self, url: str, storage: StorageSettings) -> None:
        from safetensors.numpy import save_file

        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / WEIGHTS_FILE
            save_file({"weight": self.weight.astype(np.float32), "bias": self.bias.astype(np.float32)}, str(weights))
            storage.write_bytes(join(url, WEIGHTS_FILE), weights.read_bytes())
        config = {"labels": self.labels, **self.meta}
        storage.write_bytes(join(url, CONFIG_FILE), json.dumps(config, indent=2).encode())

    @classmethod
    def load(cls, url: str, storage: StorageSettings) -> "LinearHead":
        from safetensors.numpy import load

        if not storage.exists(join(url, CONFIG_FILE)):
            raise BatchlabelError(
                f"No trained head at {url} (missing {CONFIG_FILE}). Run `batchlabel train JOB.yaml` first, "
                "or set train.inline: true."
            )
        config = json.loads(storage.read_bytes(join(url, CONFIG_FILE)))
        tensors = load(storage.read_bytes(join(url, WEIGHTS_FILE)))
        labels = config.pop("labels")
        return cls(weight=tensors["weight"], bias=tensors["bias"], labels=labels, meta=config)
