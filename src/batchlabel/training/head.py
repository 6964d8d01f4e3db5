"""train.method head: a logistic-regression head on the embed method's sentence embeddings, computed on the
method's encoder backend (recorded in the head; the embed method refuses a head from another backend).

The rows and the validation share are the fine-tune trainers' (``training.data``): a probe head fitted on
the non-validation rows gives the validation metrics; the head that is saved is fitted on all usable rows,
in input order.
"""

from __future__ import annotations

import time

import numpy as np

from batchlabel.config import EmbedMethod, HeadTrain, JobSpec
from batchlabel.errors import BatchlabelError
from batchlabel.io.storage import StorageSettings
from batchlabel.models.heads import LinearHead
from batchlabel.report.metrics import compute_metrics
from batchlabel.training.data import TrainingData, load_training_data
from batchlabel.training.result import TrainResult

MIN_VALIDATION_ROWS = 10  # fewer held-out rows give no validation metrics


def validate(features: np.ndarray, gold: list[str], data: TrainingData, train: HeadTrain) -> dict:
    """Accuracy / macro-F1 on the held-out rows of a probe head fitted on the others ({} if too few)."""
    labels = data.label_names
    fit_rows = [i for i, held in enumerate(data.held_out) if not held]
    val_rows = [i for i, held in enumerate(data.held_out) if held]
    if len(val_rows) < MIN_VALIDATION_ROWS or len({gold[i] for i in fit_rows}) < 2:
        return {}
    probe = LinearHead.fit(features[fit_rows], [gold[i] for i in fit_rows], labels, train.c, train.max_iter, train.seed)
    predicted = probe.predict_proba(features[val_rows]).argmax(axis=1)
    metrics = compute_metrics([gold[i] for i in val_rows], [labels[j] for j in predicted], labels)
    return {k: metrics[k] for k in ("rows", "accuracy", "macro_f1")}


def train_head(spec: JobSpec, progress: bool = True) -> TrainResult:
    """Embed the training rows, fit a logistic-regression head, report validation metrics, save."""
    from rich.console import Console

    from batchlabel.models.backends import load_encoder

    train = spec.train
    if not isinstance(train, HeadTrain):
        raise BatchlabelError("The head trainer needs train.method head.")
    if not isinstance(spec.method, EmbedMethod):
        raise BatchlabelError(f"train.method 'head' needs method 'embed', not {spec.method.name!r}.")
    console = Console(stderr=True, quiet=not progress)
    started = time.monotonic()
    storage = StorageSettings.from_spec(spec.storage)
    data = load_training_data(spec, train, storage)
    rows = data.rows
    console.print(f"training a linear head on {len(rows)} rows ({data.skipped} skipped) from {train.input.path}")
    import torch

    torch.manual_seed(train.seed)
    encoder = load_encoder(spec.method.encoder, storage, spec.method.max_length, spec.method.backend)
    with console.status("embedding training rows"):
        features, _ = encoder.encode(rows.texts, batch_size=spec.method.encode_batch_size)
    labels = spec.label_names
    gold = [labels[i] for i in rows.labels]
    validation = validate(features, gold, data, train)
    if validation:
        console.print(
            f"validation ({validation['rows']} held-out rows): accuracy {validation['accuracy']:.4f}, "
            f"macro-F1 {validation['macro_f1']:.4f}"
        )
    head = LinearHead.fit(features, gold, labels, train.c, train.max_iter, train.seed)
    head.meta = {
        "encoder": spec.method.encoder,
        "max_length": spec.method.max_length,
        "backend": spec.method.backend,
        "train_rows": len(rows),
        "train_input": train.input.path,
        "validation": validation,
        "c": train.c,
        "seed": train.seed,
    }
    head.save(train.output, storage)
    wall = time.monotonic() - started
    console.print(f"head written to {train.output} in {wall:.1f} s")
    return TrainResult(train.output, len(rows), data.skipped, validation, wall)
