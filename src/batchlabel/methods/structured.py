"""Pydantic models of the answers, built from the label set, and the parsing/validation of replies.

Labels are validated through `LabelNormalizer` (case, whitespace, quotes, aliases); an unknown label is an
error, never a guess. The JSON schema of each model lists the canonical names as an enum, so engines with
constrained decoding can only produce valid labels.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, create_model

from batchlabel.config.labels import LabelNormalizer
from batchlabel.engines.base import Constraint

RATIONALE_CHARS = 200


def _label_type(normalizer: LabelNormalizer) -> Any:
    def check(value: object) -> str:
        name = normalizer(value)
        if name is None:
            raise ValueError(f"unknown label {value!r}")
        return name

    return Annotated[str, BeforeValidator(check), WithJsonSchema({"type": "string", "enum": normalizer.names})]


def _id_type(ids: list[str]) -> Any:
    def check(value: object) -> str:
        text = str(value).strip()
        if text not in ids:
            raise ValueError(f"unknown id {value!r}")
        return text

    return Annotated[str, BeforeValidator(check), WithJsonSchema({"type": "string", "enum": ids})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def single_model(normalizer: LabelNormalizer, rationale: bool) -> type[BaseModel]:
    """``{"rationale"?: str, "label": <one of the labels>}``."""
    fields: dict[str, Any] = {}
    if rationale:
        fields["rationale"] = (str, Field(max_length=RATIONALE_CHARS * 4, description="One short sentence."))
    fields["label"] = (_label_type(normalizer), Field(description="The label."))
    return create_model("Classification", __base__=_Strict, **fields)


def batch_models(normalizer: LabelNormalizer, ids: list[str], rationale: bool) -> tuple[type[BaseModel], type[BaseModel]]:
    """(item model, results model) for ``{"results": [{"id", "rationale"?, "label"}, ...]}`` with exactly len(ids) items."""
    fields: dict[str, Any] = {"id": (_id_type(ids), Field(description="The article's id."))}
    if rationale:
        fields["rationale"] = (str, Field(max_length=RATIONALE_CHARS * 4, description="One short sentence."))
    fields["label"] = (str, Field(description="The label."))
    item = create_model("Item", __base__=_Strict, **fields)
    results = create_model(
        "Results",
        __base__=_Strict,
        results=(list[item], Field(min_length=len(ids), max_length=len(ids), description="One entry per article.")),
    )
    return item, results


def _schema(model: type[BaseModel], normalizer: LabelNormalizer | None = None) -> dict:
    schema = model.model_json_schema()
    if normalizer is not None:  # the item's label is validated leniently but constrained to the enum
        for definition in schema.get("$defs", {}).values():
            if "label" in definition.get("properties", {}):
                definition["properties"]["label"] = {"type": "string", "enum": normalizer.names}
    return schema


def single_constraint(normalizer: LabelNormalizer, rationale: bool, as_json: bool) -> Constraint:
    if not as_json and not rationale:
        return Constraint(choice=tuple(normalizer.names), name="label")
    return Constraint(json_schema=json.dumps(_schema(single_model(normalizer, rationale)), sort_keys=True), name="classification")


def batch_schema(normalizer: LabelNormalizer, ids: list[str], rationale: bool) -> dict:
    """JSON schema of a batched reply that fixes the ids in order (``prefixItems`` + ``const``), so a
    constrained engine cannot drop, repeat or reorder articles; the reply is still validated afterwards."""

    def item(item_id: str) -> dict:
        properties: dict[str, Any] = {"id": {"type": "string", "const": item_id}}
        if rationale:
            properties["rationale"] = {"type": "string", "maxLength": RATIONALE_CHARS}
        properties["label"] = {"type": "string", "enum": normalizer.names}
        return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}

    results = {
        "type": "array",
        "prefixItems": [item(i) for i in ids],
        "items": False,
        "minItems": len(ids),
        "maxItems": len(ids),
    }
    return {"type": "object", "properties": {"results": results}, "required": ["results"], "additionalProperties": False}


def batch_constraint(normalizer: LabelNormalizer, ids: list[str], rationale: bool) -> Constraint:
    return Constraint(json_schema=json.dumps(batch_schema(normalizer, ids, rationale), sort_keys=True), name="results")


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def _json(text: str) -> Any:
    cleaned = _FENCE.sub("", text.strip())
    try:
        return json.loads(cleaned)
    except json.JSONDecodeError:
        start, end = cleaned.find("{"), cleaned.rfind("}")
        if 0 <= start < end:
            return json.loads(cleaned[start : end + 1])
        raise


@dataclass
class Parsed:
    """Per-id outcome of a reply: canonical label or the reason it failed."""

    labels: dict[str, str]
    item_errors: dict[str, str]
    group_error: str | None = None


def parse_single(text: str, normalizer: LabelNormalizer, rationale: bool, as_json: bool) -> tuple[str | None, str | None]:
    """(label, None) or (None, reason) for a one-article answer."""
    if not as_json and not rationale:
        label = normalizer(text)
        return (label, None) if label else (None, f"unknown label {text.strip()[:80]!r}")
    try:
        value = single_model(normalizer, rationale).model_validate(_json(text))
    except (json.JSONDecodeError, ValueError) as err:
        return None, _reason(err, text)
    return value.label, None


def parse_batch(text: str, normalizer: LabelNormalizer, ids: list[str], rationale: bool) -> Parsed:
    """Check a batched reply: valid JSON, exactly one entry per id; labels normalised one by one."""
    _, results = batch_models(normalizer, ids, rationale)
    try:
        value = results.model_validate(_json(text))
    except (json.JSONDecodeError, ValueError) as err:
        return Parsed({}, {}, group_error=_reason(err, text))
    got = [item.id for item in value.results]
    if sorted(got) != sorted(ids):
        missing = sorted(set(ids) - set(got))
        duplicated = sorted({i for i in got if got.count(i) > 1})
        return Parsed({}, {}, group_error=f"reply ids do not match: missing {missing}, duplicated {duplicated}")
    labels: dict[str, str] = {}
    errors: dict[str, str] = {}
    for item in value.results:
        name = normalizer(item.label)
        if name is None:
            errors[item.id] = f"unknown label {item.label[:80]!r}"
        else:
            labels[item.id] = name
    return Parsed(labels, errors)


def _reason(err: Exception, text: str) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"invalid JSON ({err.msg} at char {err.pos}) in reply {text.strip()[:120]!r}"
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"reply does not match the schema ({where}: {first['msg']})"
    return f"invalid reply ({err})"
