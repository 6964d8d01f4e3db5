"""The stages of ``method: cascade`` as actor pools of one Ray Data pipeline (built by ``run.label_dataset``).

Stage 1 labels every row. Stage k > 1 relabels only the rows whose confidence after stage k-1 is below stage
k-1's ``min_confidence`` — or null, i.e. the row errored (a failed cheap labeler falls back to the next one;
a null/empty text errors again at every stage without reaching a model) — and passes the others through
unchanged. Each stage is its own actor pool with its own resources (``stages[k].runtime``).

Columns added: ``labeled_by`` (int16, the 1-based stage that labeled the row). ``prob_*``, ``label``,
``confidence``, ``error`` and ``truncated`` are those of the stage that labeled the row; ``tokens_*`` are the
sums over every stage the row went through (what the row cost); ``labeler_fingerprint`` is the cascade's
chain over all stages' fingerprints and thresholds (``config.cascade.cascade_fingerprint``), on every row
(docs/design.md, "Cascades: one actor pool per stage, the threshold rule, the fingerprint chain").
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchlabel.config.cascade import chain_fingerprint
from batchlabel.run.blocks import INTERNAL, PulledShards, label_in_slices, shard_runs, with_internal_columns

LABELED_BY = "labeled_by"


def escalated(block: pa.Table, below: float) -> np.ndarray:
    """Positions of the rows the next stage relabels: confidence below ``below``, or null (an error row)."""
    confidence = block.column("confidence")
    low = pc.fill_null(pc.less(confidence, pa.scalar(below, confidence.type)), True)
    return np.flatnonzero(low.to_numpy(zero_copy_only=False))


def _summed_tokens(before: pa.ChunkedArray, after: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Per-row tokens of two stages added; null only where neither stage spent any (no LLM)."""
    both_null = pc.and_(pc.is_null(before), pc.is_null(after))
    total = pc.add(pc.fill_null(before, 0), pc.fill_null(after, 0))
    return pc.if_else(both_null, pa.nulls(len(before), total.type), total)


class StageLabeler:
    """Ray Data actor of cascade stage ``index`` (0-based) of ``count``; a whole block per call.

    ``pulled``: stage 1 in ``batchlabel run`` reads the shard each block describes (``run.blocks.PulledShards``).
    ``below``: the previous stage's min_confidence (None for stage 1). ``keep_text``: the job's
    output.keep_text (applied by the last stage). ``internal``: as ``run.label_dataset.BlockLabeler``; the
    last stage then cuts its output where the shard changes, as BlockLabeler does, so the writer gets whole
    shards (not pieces to merge).
    """

    def __init__(self, stage_json: str, threads: int, pulled: tuple | None, internal: bool, index: int, count: int,
                 below: float | None,
                 keep_text: bool):
        from batchlabel.run.actor import LabelingActor

        self.actor = LabelingActor(stage_json, threads)
        self.shards = PulledShards(*pulled) if pulled else None
        self.batch_size = self.actor.spec.runtime.batch_size
        self.fingerprint = getattr(self.actor.labeler, "fingerprint", "")
        self.internal, self.index, self.count, self.below, self.keep_text = internal, index, count, below, keep_text

    def __call__(self, block: pa.Table) -> Iterator[pa.Table]:
        blocks = [block] if self.shards is None else [table for _, table, _ in self.shards.tables(block)]
        for one in blocks:
            out = self.label_block(one)
            if self.internal and self.index == self.count - 1:
                yield from shard_runs(out)
            else:
                yield out

    def label_block(self, block: pa.Table) -> pa.Table:
        """This stage's output for one block, rows in order."""
        if self.index == 0:
            out, previous = self._first(block), None
        else:
            out, previous = self._relabel(block), (block.column("labeler_fingerprint")[0].as_py() if block.num_rows else None)
        value = chain_fingerprint(previous, self.below, self.fingerprint)
        out = out.set_column(out.schema.get_field_index("labeler_fingerprint"), "labeler_fingerprint",
                             pa.array([value] * out.num_rows, pa.string()))
        if self.index == self.count - 1:
            if not self.keep_text and "text" in out.column_names:
                out = out.drop_columns(["text"])
            if not self.internal:
                out = out.drop_columns(INTERNAL)
        return out

    def _first(self, block: pa.Table) -> pa.Table:
        n = block.num_rows
        if not self.internal:
            block = with_internal_columns(block)
        out = label_in_slices(self.actor, block, self.batch_size)
        if self.internal:
            out = out.append_column("_shard_rows", block.column("_shard_rows"))
        return out.append_column(LABELED_BY, pa.array(np.ones(n, dtype=np.int16)))

    def _relabel(self, block: pa.Table) -> pa.Table:
        picked = escalated(block, self.below)
        if not len(picked):
            return block
        rows = block.take(picked)
        inputs = rows.select([c for c in rows.column_names if c not in ("labeled_by", "_shard_rows")])
        new = label_in_slices(self.actor, inputs, self.batch_size)
        if "_shard_rows" in block.column_names:
            new = new.append_column("_shard_rows", rows.column("_shard_rows"))
        new = new.append_column(LABELED_BY, pa.array(np.full(len(picked), self.index + 1, dtype=np.int16)))
        for name in [c for c in block.column_names if c.startswith("tokens_")]:
            new = new.set_column(new.schema.get_field_index(name), name, _summed_tokens(rows.column(name), new.column(name)))
        new = new.select(block.column_names).cast(block.schema)
        kept = np.setdiff1d(np.arange(block.num_rows), picked, assume_unique=True)
        merged = pa.concat_tables([block.take(kept), new])
        return merged.take(np.argsort(np.concatenate([kept, picked]), kind="stable"))
