"""What every trainer returns (re-exported by ``training.base``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainResult:
    output: str
    rows: int
    skipped_rows: int
    validation: dict
    wall_time_s: float
