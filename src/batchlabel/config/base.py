"""What every spec section shares: strict Pydantic models, the speed-only marker and the outcome hash.

``outcome_hash()`` (the idea of vLLM's ``compute_hash()``) hashes every field that can change a result.
A field that changes only speed or robustness (batch sizes, concurrency, timeouts, memory shares) says so
next to its declaration with ``json_schema_extra=SPEED_ONLY``; both the resume check (``JobSpec.result_hash``)
and the labeler fingerprints stamped on every output row read that one marker.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from batchlabel.hashing import stable_hash

#: marks a field that changes only speed or robustness, never the labels
SPEED_ONLY = {"speed_only": True}


def is_speed_only(info: Any) -> bool:
    extra = getattr(info, "json_schema_extra", None)
    return isinstance(extra, dict) and bool(extra.get("speed_only"))


class StrictModel(BaseModel):
    """Base of every spec section: unknown fields are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    def outcome(self) -> dict[str, Any]:
        """JSON-able view of the fields that can change a result (SPEED_ONLY fields left out)."""
        return {
            name: outcome_of(getattr(self, name))
            for name, info in type(self).model_fields.items()
            if not is_speed_only(info)
        }

    def outcome_hash(self) -> str:
        """Stable hash of ``outcome()``: equal for two specs that must give the same results."""
        return stable_hash(self.outcome())


def outcome_of(value: Any) -> Any:
    """JSON-able view of a spec value without its SPEED_ONLY fields (nested models included)."""
    if isinstance(value, StrictModel):
        return value.outcome()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [outcome_of(item) for item in value]
    if isinstance(value, dict):
        return {str(key): outcome_of(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def format_validation_error(err: ValidationError, source: str, kind: str = "job spec") -> str:
    """One paragraph naming every bad field by its path (``method.prompt.engine.hf.base_url``).

    Inside a discriminated union the path carries the chosen variant (``engine.hf``), so a field that the
    chosen engine or trainer does not use reads as an unknown field of that variant.
    """
    lines = []
    unknown: str | None = None  # the section of the first unknown field
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-after"))
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field"
            if unknown is None:
                unknown = _schema_section(item["loc"][:-1], kind)
        elif item["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{loc or '(top level)'}: {msg}")
    hint = (
        " Check the spelling, and that the field belongs to the chosen method, engine or trainer "
        f"(`batchlabel schema {unknown}` lists the fields it takes, with types, defaults and descriptions)."
        if unknown is not None else ""
    )
    return f"Invalid {kind} {source}: " + "; ".join(lines) + "." + hint


def _schema_section(loc: tuple, kind: str) -> str:
    """The `batchlabel schema` argument for a section given by a validation-error location."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not str(part).startswith("function-after"):
            path = f"{path}.{part}" if path else str(part)
    root = "pipeline" if kind == "pipeline" else "job"
    return f"{root}.{path}" if path and root == "pipeline" else (path or root)
