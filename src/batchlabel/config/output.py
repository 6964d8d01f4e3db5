"""Where labeled Parquet and the report go, and whether a report is written."""

from __future__ import annotations

from pydantic import Field

from batchlabel.config.base import StrictModel


class OutputSpec(StrictModel):
    """Where labeled Parquet and the report go."""

    path: str = Field(description="Output directory, local or s3://.")
    shard_rows: int = Field(1000, ge=1, description="Rows per committed output shard (a resume unit).")
    keep_text: bool = Field(False, description="Also write the input text into the output.")


class EvalSpec(StrictModel):
    """Evaluation against gold labels."""

    enabled: bool = Field(True, description="Write a report (metrics need input.gold_column).")
