"""Where the corpus is: files, columns, a stable hash split and a row limit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from batchlabel.config.base import SPEED_ONLY, StrictModel


class SplitSpec(StrictModel):
    """Deterministic train/test split by a stable hash of the row id."""

    fraction: float = Field(0.8, gt=0.0, lt=1.0, description="Share of rows that fall in the 'train' part.")
    part: Literal["train", "test"] = Field(description="Which part of the split this input keeps.")
    salt: str = Field("batchlabel", description="Salt mixed into the hash; change it to draw another split.")


class InputSpec(StrictModel):
    """Where the corpus is and which columns hold what."""

    path: str = Field(description="File, directory or glob; local path or s3:// URL.")
    format: Literal["auto", "parquet", "csv", "jsonl"] = Field(
        "auto", description="File format; 'auto' picks it from the file extension."
    )
    id_column: str = Field("id", description="Column holding a unique row id.")
    text_column: str = Field("text", description="Column holding the text to label.")
    gold_column: str | None = Field(None, description="Column holding the gold label, if any (enables metrics).")
    passthrough: list[str] = Field(default_factory=list, description="Input columns copied into the output.")
    limit: int | None = Field(None, gt=0, description="Label only the first N rows (after the split).")
    split: SplitSpec | None = Field(None, description="Keep one part of a hash split of the ids.")
    csv_newlines_in_values: bool = Field(
        True,
        description="CSV only: quoted values may hold newlines, so each CSV file is one shard read whole. "
        "Set false to cut big CSV files into byte ranges read in parallel (only for CSV without a newline "
        "inside a quoted value; for those both settings give the same rows, so it is speed-only).",
        json_schema_extra=SPEED_ONLY,
    )
