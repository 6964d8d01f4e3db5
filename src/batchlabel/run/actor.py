"""The Ray actor that labels batches, and the output schema it produces.

Row-level problems (null/empty text, a failing model call) become error rows; the actor never
raises for a row, so one bad article cannot fail the job (Ray would fail the whole dataset, and
`max_errored_blocks` would silently drop rows).

Token columns (``TOKEN_COLUMNS``, int64): what the LLM spent on each row, apportioned so that they sum to the
engine's totals (``methods.llm``); 0 on an LLM method's rows that never reached the model (null/empty text),
null for methods without an LLM (classifier, embed).
"""

from __future__ import annotations

import os
import time
import traceback

import numpy as np
import pyarrow as pa

from batchlabel.config import JobSpec
from batchlabel.hashing import text_hash
from batchlabel.methods.base import LabelOutput, TokenCounts

MAX_ERROR_CHARS = 500
#: per-row LLM token columns: prompt (cached included), cached prompt, output
TOKEN_COLUMNS = ("tokens_prompt", "tokens_cached", "tokens_output")


def prob_column(label: str) -> str:
    return f"prob_{label}"


def output_schema(spec: JobSpec, passthrough_types: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """Columns of labeled output, in order."""
    fields = [
        pa.field("id", pa.string()),
        pa.field("label", pa.string()),
        pa.field("confidence", pa.float32()),
        *[pa.field(prob_column(name), pa.float32()) for name in spec.label_names],
        pa.field("error", pa.string()),
        pa.field("truncated", pa.bool_()),
        pa.field("labeler_fingerprint", pa.string()),
        pa.field("text_hash", pa.string()),
        pa.field("gold", pa.string()),
        *[pa.field(name, pa.int64()) for name in TOKEN_COLUMNS],
    ]
    if spec.output.keep_text:
        fields.append(pa.field("text", pa.large_string()))
    for name, dtype in (passthrough_types or {}).items():
        fields.append(pa.field(name, dtype))
    return pa.schema(fields)


def check_text(text: object) -> str | None:
    """Why a text cannot be labeled, or None when it can."""
    if text is None:
        return "null text"
    if not isinstance(text, str):
        return f"text is not a string ({type(text).__name__})"
    if not text.strip():
        return "empty text"
    return None


def build_output(spec: JobSpec, batch: pa.Table, result: LabelOutput, fingerprint: str) -> pa.Table:
    """Assemble the labeled table for an input batch (row order preserved)."""
    n_labels = len(spec.label_names)
    texts = batch.column("text").to_pylist()
    columns: dict[str, pa.Array] = {
        "id": batch.column("id"),
        "label": pa.array(result.labels, pa.string()),
        "confidence": pa.array(result.confidence, pa.float32()),
    }
    probs = result.probs.reshape(len(texts), n_labels)
    for j, name in enumerate(spec.label_names):
        column = probs[:, j]
        columns[prob_column(name)] = pa.array(column, pa.float32(), mask=np.isnan(column))
    columns["error"] = pa.array(result.errors, pa.string())
    columns["truncated"] = pa.array(result.truncated or [False] * len(texts), pa.bool_())
    columns["labeler_fingerprint"] = pa.array([fingerprint] * len(texts), pa.string())
    columns["text_hash"] = pa.array([text_hash(t) if isinstance(t, str) else None for t in texts], pa.string())
    columns["gold"] = batch.column("gold")
    tokens = result.tokens
    for name, values in zip(TOKEN_COLUMNS, (tokens.prompt, tokens.cached, tokens.output) if tokens else [None] * 3):
        columns[name] = pa.array(values, pa.int64()) if values is not None else pa.nulls(len(texts), pa.int64())
    if spec.output.keep_text:
        columns["text"] = batch.column("text")
    for name in spec.input.passthrough:
        columns[name] = batch.column(name)
    columns["_shard"] = batch.column("_shard")
    columns["_row"] = batch.column("_row")
    return pa.table(columns)


def _label_with_retries(spec: JobSpec, labeler, texts: list[str], n_labels: int, attempts: int | None = None) -> LabelOutput:
    """Call the labeler; retry a raising call, then bisect the batch so that only the rows that keep
    failing become error rows (one poison article must not take its whole batch down)."""
    attempts = spec.runtime.max_retries + 1 if attempts is None else attempts
    error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            return labeler.label(texts)
        except Exception as err:  # a model failure must not fail the dataset: record it per row
            error = err
            if os.environ.get("BATCHLABEL_DEBUG"):
                traceback.print_exc()
            if attempt < attempts:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
    if len(texts) > 1:
        middle = len(texts) // 2
        halves = [_label_with_retries(spec, labeler, part, n_labels, attempts=1) for part in (texts[:middle], texts[middle:])]
        return LabelOutput(
            labels=halves[0].labels + halves[1].labels,
            confidence=halves[0].confidence + halves[1].confidence,
            probs=np.concatenate([halves[0].probs, halves[1].probs]),
            errors=halves[0].errors + halves[1].errors,
            truncated=(halves[0].truncated or [False] * middle) + (halves[1].truncated or [False] * (len(texts) - middle)),
            tokens=_joined_tokens(halves[0], halves[1]),
        )
    reason = f"labeler failed: {type(error).__name__}: {error}"
    return LabelOutput.failed(len(texts), n_labels, reason[:MAX_ERROR_CHARS])


def _joined_tokens(first: LabelOutput, second: LabelOutput) -> TokenCounts | None:
    if first.tokens is None and second.tokens is None:
        return None
    return (first.tokens or TokenCounts.zeros(len(first.labels))) + (second.tokens or TokenCounts.zeros(len(second.labels)))


def label_table(spec: JobSpec, labeler, batch: pa.Table) -> pa.Table:
    """Validate rows, label the good ones, turn everything else into error rows."""
    n_labels = len(spec.label_names)
    texts = batch.column("text").to_pylist()
    problems = [check_text(t) for t in texts]
    good = [i for i, p in enumerate(problems) if p is None]
    merged = LabelOutput.failed(len(texts), n_labels, "")
    merged.errors = list(problems)
    if good:
        result = _label_with_retries(spec, labeler, [texts[i] for i in good], n_labels)
        for position, index in enumerate(good):
            merged.labels[index] = result.labels[position]
            merged.confidence[index] = result.confidence[position]
            merged.probs[index] = result.probs[position]
            merged.errors[index] = result.errors[position]
            if result.truncated:
                merged.truncated[index] = result.truncated[position]
        if result.tokens is not None:
            merged.tokens = merged.tokens or TokenCounts.zeros(len(texts))
            for position, index in enumerate(good):
                merged.tokens.set(index, result.tokens, position)
    elif getattr(labeler, "counts_tokens", False):  # an LLM method with nothing to label here: no tokens spent
        merged.tokens = TokenCounts.zeros(len(texts))
    return build_output(spec, batch, merged, getattr(labeler, "fingerprint", ""))


class LabelingActor:
    """Ray Data actor: builds the labeler once, then labels each pyarrow batch it is given."""

    def __init__(self, spec_json: str, threads: int):
        import torch

        from batchlabel.methods import build_labeler

        self.torch = torch
        self.threads = max(1, threads)
        torch.set_num_threads(self.threads)
        self.spec = JobSpec.model_validate_json(spec_json)
        self.labeler = build_labeler(self.spec)

    def __call__(self, batch: pa.Table) -> pa.Table:
        # Ray Data calls this from a worker thread; OpenMP thread counts are per calling thread
        # (docs/design.md, "OpenMP threads are per calling thread")
        if self.torch.get_num_threads() != self.threads:
            self.torch.set_num_threads(self.threads)
        return label_table(self.spec, self.labeler, batch)
