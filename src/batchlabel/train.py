"""`batchlabel train`: fit the model a job labels with (the linear head on embeddings)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from batchlabel.errors import BatchlabelError
from batchlabel.heads import CONFIG_FILE, LinearHead
from batchlabel.labels import LabelNormalizer
from batchlabel.report import compute_metrics
from batchlabel.source import plan_input, read_shards
from batchlabel.spec import EmbedMethod, JobSpec, TrainSpec
from batchlabel.storage import StorageSettings, join

VALIDATION_FRACTION = 0.1


@dataclass
class TrainResult:
    output: str
    rows: int
    skipped_rows: int
    validation: dict
    wall_time_s: float


def load_training_rows(spec: JobSpec, train: TrainSpec, storage: StorageSettings) -> tuple[list[str], list[str], int]:
    """Texts and canonical gold labels of the training input; rows with no text/unknown gold are skipped."""
    normalise = LabelNormalizer(spec.labels)
    plan = plan_input(train.input, storage, shard_rows=100_000)
    texts: list[str] = []
    gold: list[str] = []
    skipped = 0
    for file in plan.files:
        for table in read_shards(train.input, storage, file, file.shards):
            for text, label in zip(table.column("text").to_pylist(), table.column("gold").to_pylist()):
                name = normalise(label)
                if name is None or not isinstance(text, str) or not text.strip():
                    skipped += 1
                    continue
                texts.append(text)
                gold.append(name)
    if not texts:
        raise BatchlabelError(f"No usable training rows in {train.input.path} (gold labels must be in the label set).")
    return texts, gold, skipped


def _is_validation(text: str, salt: str) -> bool:
    digest = hashlib.blake2b((salt + text).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < VALIDATION_FRACTION


def train_head(spec: JobSpec, progress: bool = True) -> TrainResult:
    """Embed the training rows, fit a logistic-regression head, report validation metrics, save."""
    from rich.console import Console

    from batchlabel.encoders import SentenceEncoder

    if spec.train is None:
        raise BatchlabelError("The job spec has no train section.")
    if not isinstance(spec.method, EmbedMethod):
        raise BatchlabelError(f"train.method 'head' needs method 'embed', not {spec.method.name!r}.")
    train = spec.train
    console = Console(stderr=True, quiet=not progress)
    started = time.monotonic()
    storage = StorageSettings.from_spec(spec.storage)
    texts, gold, skipped = load_training_rows(spec, train, storage)
    console.print(f"training a linear head on {len(texts)} rows ({skipped} skipped) from {train.input.path}")
    import torch

    torch.manual_seed(train.seed)
    encoder = SentenceEncoder(spec.method.encoder, storage, max_length=spec.method.max_length)
    with console.status("embedding training rows"):
        features, _ = encoder.encode(texts, batch_size=spec.method.encode_batch_size)
    labels = spec.label_names
    is_val = [_is_validation(t, str(train.seed)) for t in texts]
    fit_rows = [i for i, v in enumerate(is_val) if not v]
    val_rows = [i for i, v in enumerate(is_val) if v]
    validation: dict = {}
    if len(val_rows) >= 10 and len({gold[i] for i in fit_rows}) >= 2:
        probe = LinearHead.fit(features[fit_rows], [gold[i] for i in fit_rows], labels, train.c, train.max_iter, train.seed)
        predicted = probe.predict_proba(features[val_rows]).argmax(axis=1)
        metrics = compute_metrics([gold[i] for i in val_rows], [labels[j] for j in predicted], labels)
        validation = {k: metrics[k] for k in ("rows", "accuracy", "macro_f1")}
        console.print(f"validation ({len(val_rows)} held-out rows): accuracy {validation['accuracy']:.4f}, macro-F1 {validation['macro_f1']:.4f}")
    head = LinearHead.fit(features, gold, labels, train.c, train.max_iter, train.seed)
    head.meta = {
        "encoder": spec.method.encoder,
        "max_length": spec.method.max_length,
        "train_rows": len(texts),
        "train_input": train.input.path,
        "validation": validation,
        "c": train.c,
        "seed": train.seed,
    }
    head.save(train.output, storage)
    wall = time.monotonic() - started
    console.print(f"head written to {train.output} in {wall:.1f} s")
    return TrainResult(train.output, len(texts), skipped, validation, wall)


def train_model(spec: JobSpec, progress: bool = True) -> TrainResult:
    """Dispatch on train.method."""
    if spec.train is None:
        raise BatchlabelError("The job spec has no train section: add one (see jobs/reuters_embed.yaml).")
    if spec.train.method in ("lora", "full", "instruct"):
        from batchlabel.training import train_classifier

        return train_classifier(spec, progress=progress)
    return train_head(spec, progress=progress)


def train_if_missing(spec: JobSpec, progress: bool = True) -> TrainResult | None:
    """For `run` with train.inline: train unless a model already exists at train.output."""
    assert spec.train is not None
    storage = StorageSettings.from_spec(spec.storage)
    if spec.train.method in ("lora", "full", "instruct"):
        from batchlabel.training.artifacts import MARKER_FILE

        marker = MARKER_FILE
    else:
        marker = CONFIG_FILE
    if storage.exists(join(spec.train.output, marker)):
        return None
    return train_model(spec, progress=progress)
