"""Gold rows for fine-tuning, split into train/validation by a stable hash of the row id."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from batchlabel.errors import BatchlabelError
from batchlabel.labels import LabelNormalizer
from batchlabel.source import plan_input, read_shards
from batchlabel.spec import JobSpec, TrainSpec
from batchlabel.storage import StorageSettings

SPLIT_SALT = "batchlabel-validation"


@dataclass
class Rows:
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, row_id: str, text: str, label: int) -> None:
        self.ids.append(row_id)
        self.texts.append(text)
        self.labels.append(label)


@dataclass
class TrainingData:
    train: Rows
    validation: Rows
    label_names: list[str]
    skipped: int


def is_validation(row_id: str, fraction: float, salt: str = SPLIT_SALT) -> bool:
    """Stable: the same id always falls on the same side (independent of file order and seed)."""
    if fraction <= 0:
        return False
    digest = hashlib.blake2b((salt + row_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def load_training_data(spec: JobSpec, train: TrainSpec, storage: StorageSettings) -> TrainingData:
    """Read the training input; rows without text or with a gold label outside the label set are skipped."""
    normalise = LabelNormalizer(spec.labels)
    index = {name: i for i, name in enumerate(spec.label_names)}
    plan = plan_input(train.input, storage, shard_rows=100_000)
    data = TrainingData(Rows(), Rows(), spec.label_names, 0)
    for file in plan.files:
        for table in read_shards(train.input, storage, file, file.shards):
            columns = (table.column(c).to_pylist() for c in ("id", "text", "gold"))
            for row_id, text, gold in zip(*columns):
                name = normalise(gold)
                if name is None or not isinstance(text, str) or not text.strip():
                    data.skipped += 1
                    continue
                part = data.validation if is_validation(row_id, train.eval_fraction) else data.train
                part.add(row_id, text, index[name])
    if len(data.train) == 0:
        raise BatchlabelError(
            f"No usable training rows in {train.input.path} (gold labels must be in the label set, texts non-empty)."
        )
    return data
