"""The report's token and cost section, from the per-row token columns (``run.actor.TOKEN_COLUMNS``).

Totals are the columns' sums, so they equal what the engines spent (re-asks included). Per label: by the
predicted label, error rows under "(error)". Cost: prompt tokens not from the cache at ``input_per_million``,
cached ones at ``cached_input_per_million`` (default: the input price), output tokens at ``output_per_million``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchlabel.report.escape import cell

#: where error rows go in per_label (the name report.metrics gives them in the confusion matrix)
ERROR_LABEL = "(error)"
#: the output's token columns and the report's names for them
COLUMNS = {"tokens_prompt": "prompt_tokens", "tokens_cached": "cached_prompt_tokens", "tokens_output": "output_tokens"}


def _prices(price: Any) -> dict[str, float] | None:
    """A PriceSpec, its dict (the report's ``run.price``) or None."""
    if price is None:
        return None
    values = price.model_dump() if hasattr(price, "model_dump") else dict(price)
    cached = values.get("cached_input_per_million")
    return {
        "input_per_million": float(values["input_per_million"]),
        "cached_input_per_million": float(values["input_per_million"] if cached is None else cached),
        "output_per_million": float(values["output_per_million"]),
    }


def _cost(sums: Mapping[str, int], prices: dict[str, float]) -> float:
    fresh = sums["prompt_tokens"] - sums["cached_prompt_tokens"]
    return (
        fresh * prices["input_per_million"]
        + sums["cached_prompt_tokens"] * prices["cached_input_per_million"]
        + sums["output_tokens"] * prices["output_per_million"]
    ) / 1e6


def usage_section(table: pa.Table, label_names: list[str], price: Any = None) -> dict | None:
    """report["usage"]: token totals, per article, per label and (with a price) the cost; None when the table
    has no token counts (a method without an LLM, or output written before the token columns existed)."""
    if not all(name in table.column_names for name in COLUMNS):
        return None
    counted = pc.is_valid(table.column("tokens_prompt"))
    rows = int(pc.sum(pc.cast(counted, pa.int64())).as_py() or 0)
    if rows == 0:
        return None
    counts = {
        key: np.asarray(pc.fill_null(table.column(name), 0).to_numpy(), dtype=np.int64) for name, key in COLUMNS.items()
    }
    mask = np.asarray(counted.to_numpy(zero_copy_only=False), dtype=bool)
    prices = _prices(price)
    sums = {key: int(values[mask].sum()) for key, values in counts.items()}
    section: dict[str, Any] = {**sums, "rows": rows, "per_article": {key: sums[key] / rows for key in sums}}
    per_label: dict[str, dict[str, Any]] = {}
    if "label" in table.column_names:
        labels = table.column("label")
        for name in [*label_names, ERROR_LABEL]:
            match = pc.is_null(labels) if name == ERROR_LABEL else pc.fill_null(pc.equal(labels, name), False)
            chosen = mask & np.asarray(match.to_numpy(zero_copy_only=False), dtype=bool)
            n = int(chosen.sum())
            if n:
                entry: dict[str, Any] = {"rows": n}
                entry.update({key: int(values[chosen].sum()) for key, values in counts.items()})
                if prices:
                    entry['cost_usd'] = _cost(entry, prices)
                per_label[name] = entry
    section["per_label"] = per_label
    if prices:
        total = _cost(sums, prices)
        section["cost"] = {**prices, "total_usd": total}
        section["per_article"]["cost_usd"] = total / rows
    return section


def usage_markdown(section: Mapping[str, Any] | None) -> list[str]:
    """Markdown lines of the section (empty without one), for report.md / report.html writers."""
    if not section:
        return []
    per = section["per_article"]
    lines = [
        "## Tokens and cost",
        "",
        f"{section['rows']:,} rows: {section['prompt_tokens']:,} prompt tokens ({section['cached_prompt_tokens']:,} "
        f"cached), {section['output_tokens']:,} output tokens; per article {per['prompt_tokens']:.1f} prompt, "
        f"{per['output_tokens']:.1f} output.",
    ]
    cost = section.get("cost")
    if cost:
        lines.append(
            f"Cost: **${cost['total_usd']:.4g}** (${per['cost_usd'] * 1000:.4g} per 1,000 articles) at "
            f"${cost['input_per_million']:g} / ${cost['cached_input_per_million']:g} (cached) / "
            f"${cost['output_per_million']:g} per million input / output tokens."
        )
    if section.get("per_label"):
        header = "| label | rows | prompt tokens | cached | output tokens |" + (" cost (USD) |" if cost else "")
        lines += ["", header, "|---|---:|---:|---:|---:|" + ("---:|" if cost else "")]
        for name, entry in section["per_label"].items():
            row = (f"| {cell(name)} | {entry['rows']:,} | {entry['prompt_tokens']:,} | {entry['cached_prompt_tokens']:,} "
                   f"| {entry['output_tokens']:,} |")
            lines.append(row + (f" {entry['cost_usd']:.4g} |" if cost else ""))
    return lines + [""]
