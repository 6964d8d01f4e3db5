"""The report's cascade section (``method: cascade``): per stage the rows it labeled, their share, their
accuracy on gold and the tokens they cost, and the share of rows each stage saw.

``labeled_by`` (run/cascade.py) is the 1-based stage that labeled a row. A stage *sees* every row labeled by it
or by a later stage (the rows escalated to it). Tokens of a row are the sums over every stage it went through,
so a stage's tokens here are what its rows cost in total. Rows/s per stage are not measured: the stages run
concurrently in one pipeline (the run's rows/s is the cascade's).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def cascade_section(table: pa.Table, labels: list[str], stages: list[dict[str, Any]] | None = None) -> dict | None:
    """report["cascade"], or None when the table has no ``labeled_by`` column."""
    if "labeled_by" not in table.column_names:
        return None
    by = np.asarray(pc.fill_null(table.column("labeled_by"), 0).to_numpy(), dtype=np.int64)
    count = max(len(stages or []), int(by.max()) if len(by) else 0)
    gold = table.column("gold").to_numpy(zero_copy_only=False)
    predicted = table.column("label").to_numpy(zero_copy_only=False)
    known = np.isin(gold, np.asarray(labels, dtype=object)) & np.not_equal(gold, None)
    right = known & (predicted == gold)
    tokens = {name: np.asarray(pc.fill_null(table.column(name), 0).to_numpy(), dtype=np.int64)
              for name in ("tokens_prompt", "tokens_output") if name in table.column_names}
    total = len(by)
    rows = []
    for number in range(1, count + 1):
        mine = by == number
        gold_rows = int((mine & known).sum())
        entry: dict[str, Any] = {
            "stage": number,
            "method": (stages[number - 1].get("method") if stages and number <= len(stages) else None),
            "min_confidence": (stages[number - 1].get("min_confidence") if stages and number <= len(stages) else None),
            "rows": int(mine.sum()),
            "share": float(mine.sum() / total) if total else 0.0,
            "rows_seen": int((by >= number).sum()),
            "share_seen": float((by >= number).sum() / total) if total else 0.0,
            "gold_rows": gold_rows,
            "accuracy": float((mine & right).sum() / gold_rows) if gold_rows else None,
        }
        for name, values in tokens.items():
            entry[name] = int(values[mine].sum())
        rows.append(entry)
    all_gold = int(known.sum())
    return {"stages": rows, "rows": total, "accuracy": float(right.sum() / all_gold) if all_gold else None}


def cascade_markdown(section: dict[str, Any]) -> list[str]:
    """The cascade section as Markdown lines."""
    has_tokens = any("tokens_prompt" in s for s in section["stages"])
    head = "| stage | method | min_confidence | rows labeled | share | rows seen | share seen | accuracy (gold rows) |"
    rule = "|---:|---|---:|---:|---:|---:|---:|---:|"
    if has_tokens:
        head, rule = head + " prompt tokens | output tokens |", rule + "---:|---:|"
    lines = ["", "## Cascade", "", head, rule]
    for s in section["stages"]:
        threshold = "—" if s["min_confidence"] is None else f"{s['min_confidence']:.4g}"
        accuracy = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.4f} ({s['gold_rows']})"
        line = (f"| {s['stage']} | {s['method'] or '?'} | {threshold} | {s['rows']} | {s['share']:.3f} | "
                f"{s['rows_seen']} | {s['share_seen']:.3f} | {accuracy} |")
        if has_tokens:
            line += f" {s.get('tokens_prompt', 0)} | {s.get('tokens_output', 0)} |"
        lines.append(line)
    overall = "n/a" if section["accuracy"] is None else f"**{section['accuracy']:.4f}**"
    lines += ["", (f"- the cascade's accuracy on gold: {overall}; a stage sees the rows the stage before it was unsure "
              "about (confidence below its min_confidence, or an error); tokens are what those rows cost over all stages")]
    return lines
