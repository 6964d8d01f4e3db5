"""Few-shot example selection: fixed, random, stratified per label, or nearest neighbours by embedding."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from batchlabel.config import FewShotSpec, LabelSpec
from batchlabel.config.labels import LabelNormalizer
from batchlabel.errors import BatchlabelError
from batchlabel.io.storage import StorageSettings
from batchlabel.methods.prompts import Example


def read_examples(spec: FewShotSpec, labels: list[LabelSpec], storage: StorageSettings) -> tuple[list[Example], list]:
    """All usable examples (label normalised; rows with empty text or unknown labels skipped) and their ids."""
    source = spec.source
    fs, path = storage.resolve(source.path)
    try:
        if path.endswith(".csv"):
            with fs.open_input_file(path) as handle:
                table = pacsv.read_csv(handle)
        elif path.endswith((".jsonl", ".json")):
            with fs.open_input_file(path) as handle:
                table = pajson.read_json(handle)
        else:
            table = pq.read_table(path, filesystem=fs)
    except (OSError, pa.ArrowInvalid) as err:
        raise BatchlabelError(f"Cannot read few-shot examples {source.path}: {err}") from None
    needed = [source.text_column, source.gold_column] + ([source.id_column] if source.id_column else [])
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise BatchlabelError(f"Few-shot examples {source.path} lack columns {missing} (have {table.column_names}).")
    if source.split is not None:
        if not source.id_column:
            raise BatchlabelError("few_shot.source.split needs few_shot.source.id_column (the split hashes the ids).")
        from batchlabel.io.source import in_split

        table = table.filter(in_split(table.column(source.id_column).combine_chunks(), source.split))
    normalizer = LabelNormalizer(labels)
    texts = table.column(source.text_column).to_pylist()
    golds = table.column(source.gold_column).to_pylist()
    ids = table.column(source.id_column).to_pylist() if source.id_column else list(range(len(texts)))
    examples, kept_ids = [], []
    for text, gold, row_id in zip(texts, golds, ids):
        name = normalizer(gold)
        if isinstance(text, str) and text.strip() and name is not None:
            examples.append(Example(text, name))
            kept_ids.append(row_id)
    if len(examples) < spec.k:
        raise BatchlabelError(
            f"Few-shot source {source.path} has {len(examples)} usable examples (text + a known label), fewer than k={spec.k}."
        )
    return examples, kept_ids


def _stratified(examples: list[Example], names: list[str], k: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    pools = {name: [e for e in examples if e.label == name] for name in names}
    for pool in pools.values():
        rng.shuffle(pool)
    chosen: list[Example] = []
    while len(chosen) < k and any(pools.values()):
        for name in names:
            if pools[name] and len(chosen) < k:
                chosen.append(pools[name].pop())
    return chosen


class FewShotSelector:
    """Picks the examples for each article; static strategies give the same list to all (prefix cache)."""

    def __init__(self, spec: FewShotSpec, labels: list[LabelSpec], storage: StorageSettings, clip=None):
        self.spec = spec
        examples, ids = read_examples(spec, labels, storage)
        if clip is not None:  # cut example texts with the engine's tokenizer
            texts, _ = clip([e.text for e in examples], spec.max_example_tokens)
            examples = [Example(t, e.label) for t, e in zip(texts, examples)]
        self.examples = examples
        self.static = spec.strategy != "nearest"
        names = [label.name for label in labels]
        if spec.strategy == "fixed":
            if spec.ids:
                by_id = {str(i): e for i, e in zip(ids, examples)}
                unknown = [i for i in spec.ids if i not in by_id]
                if unknown:
                    raise BatchlabelError(f"few_shot.ids {unknown} are not usable rows of {spec.source.path}.")
                self.fixed = [by_id[i] for i in spec.ids]
            else:
                self.fixed = examples[: spec.k]
        elif spec.strategy == "random":
            self.fixed = random.Random(spec.seed).sample(examples, spec.k)
        elif spec.strategy == "stratified":
            self.fixed = _stratified(examples, names, spec.k, spec.seed)
        else:
            from batchlabel.models.encoders import SentenceEncoder

            self.fixed = []
            self.encoder = SentenceEncoder(spec.encoder, storage, max_length=128)
            self.matrix, _ = self.encoder.encode([e.text for e in examples], batch_size=32)

    def select(self, texts: list[str]) -> list[list[Example]]:
        """Examples for each text (most similar last, i.e. nearest the article)."""
        if self.static:
            return [self.fixed for _ in texts]
        vectors, _ = self.encoder.encode(texts, batch_size=32)
        similarity = vectors @ self.matrix.T
        top = np.argsort(-similarity, axis=1)[:, : self.spec.k]
        return [[self.examples[j] for j in reversed(row.tolist())] for row in top]

    def select_group(self, texts: list[str]) -> list[Example]:
        """One example list for a group of articles (nearest: round-robin over the articles' neighbours)."""
        if self.static:
            return self.fixed
        per_text = [list(reversed(row)) for row in self.select(texts)]
        chosen: list[Example] = []
        for rank in range(self.spec.k):
            for row in per_text:
                if rank < len(row) and row[rank] not in chosen and len(chosen) < self.spec.k:
                    chosen.append(row[rank])
        return list(reversed(chosen))
