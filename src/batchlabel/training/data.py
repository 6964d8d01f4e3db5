"""Gold rows for training, split into train/validation by a stable hash of the row id.

Every trainer (head, lora, full, instruct) reads its rows here and holds out the same validation share
(``train.eval_fraction``); ``TrainingData.rows`` keeps all usable rows in input order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from batchlabel.config import JobSpec, TrainSpec
from batchlabel.config.labels import LabelNormalizer
from batchlabel.errors import BatchlabelError
from batchlabel.io.source import plan_input, read_shards
from batchlabel.io.storage import StorageSettings

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

    def where(self, keep: list[bool]) -> "Rows":
        """The rows whose ``keep`` flag is set, in order."""
        part = Rows()
        for row_id, text, label, wanted in zip(self.ids, self.texts, self.labels, keep):
            if wanted:
                part.add(row_id, text, label)
        return part


@dataclass
class TrainingData:
    rows: Rows  # every usable row, in input order
    held_out: list[bool]  # per row of ``rows``: in the validation share
    label_names: list[str]
    skipped: int

    @cached_property
    def train(self) -> Rows:
        """The rows a model is fitted on (input order)."""
        return self.rows.where([not v for v in self.held_out])

    @cached_property
    def validation(self) -> Rows:
        """The held-out rows (input order)."""
        return self.rows.where(self.held_out)


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
    data = TrainingData(Rows(), [], spec.label_names, 0)
    for file in plan.files:
        for table in read_shards(train.input, storage, file, file.shards):
            columns = (table.column(c).to_pylist() for c in ("id", "text", "gold"))
            for row_id, text, gold in zip(*columns):
                name = normalise(gold)
                if name is None or not isinstance(text, str) or not text.strip():
                    data.skipped += 1
                    continue
                data.rows.add(row_id, text, index[name])
                data.held_out.append(is_validation(row_id, train.eval_fraction))
    if len(data.rows) == 0:
        raise BatchlabelError(
            f"No usable training rows in {train.input.path} (gold labels must be in the label set, texts non-empty)."
        )
    return data
