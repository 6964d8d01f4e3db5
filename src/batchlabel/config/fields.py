"""Every spec field with its path, type, constraints, default and description, read from the Pydantic models
(what `batchlabel schema` prints; the spec-error hint points there).

Paths are the ones a YAML file, ``--set`` and the spec errors use: ``runtime.actors``,
``method.prompt.engine.vllm.model`` (a discriminated union adds the chosen variant, as in the errors),
``labels[].name`` (a list of sections). A pipeline file's fields start with ``pipeline.``. A section that occurs
in several places (``input`` is also ``train.head.input`` and ``pipeline.gold``) is listed once, at the shortest
path; the other places say where (``see``).
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from batchlabel.config.base import StrictModel
from batchlabel.config.job import JobSpec
from batchlabel.config.nightly import PipelineSpec
from batchlabel.errors import SpecError

#: the two kinds of spec file and where their fields start ("" = the top level of a job file)
ROOTS: dict[str, type[StrictModel]] = {"": JobSpec, "pipeline": PipelineSpec}


@dataclass(frozen=True)
class FieldDoc:
    path: str  # runtime.actors
    model: type  # the model that declares the field (RuntimeSpec)
    name: str  # actors
    type: str  # int
    constraints: str  # >=1
    required: bool
    default: str  # JSON text of the default ("" when required)
    description: str
    see: tuple[str, ...] = ()  # sections described elsewhere that this field holds

    def line(self) -> str:
        parts = [self.type] + ([self.constraints] if self.constraints else [])
        parts.append("required" if self.required else f"default {self.default}")
        text = f"{self.path} ({', '.join(parts)}): {self.description}"
        if self.see:
            text += f" Fields: see {', '.join(self.see)}."
        return text


@dataclass(frozen=True)
class SectionDoc:
    path: str  # "" for the top level of a job file
    model: type
    fields: tuple[FieldDoc, ...]

    @property
    def title(self) -> str:
        doc = (self.model.__doc__ or "").strip().split("\n")[0]
        where = self.path or "job spec"
        return f"# {where} ({self.model.__name__}): {doc}"


def _strip(annotation: Any) -> tuple[Any, str | None]:
    """The annotation without Annotated[...] wrappers, and the discriminator found on the way."""
    discriminator = None
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extras = typing.get_args(annotation)
        for extra in extras:
            if isinstance(extra, FieldInfo) and isinstance(extra.discriminator, str):
                discriminator = extra.discriminator
    return annotation, discriminator


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _shape(annotation: Any, discriminator: str | None) -> tuple[list[type], str, str | None]:
    """(the section models a field holds, "[]" if they come as a list, the union's discriminator)."""
    annotation, found = _strip(annotation)
    discriminator = discriminator or found
    origin = typing.get_origin(annotation)
    if origin is list:
        models, _, inner = _shape(typing.get_args(annotation)[0], discriminator)
        return models, "[]", inner
    if origin in (typing.Union, types.UnionType):
        models: list[type] = []
        for arg in typing.get_args(annotation):
            inner_models, suffix, inner = _shape(arg, None)
            if not suffix:
                models += inner_models
            discriminator = discriminator or inner
        return models, "", discriminator
    return ([annotation] if _is_model(annotation) else []), "", discriminator


def _tag(model: type, discriminator: str) -> str:
    return str(typing.get_args(model.model_fields[discriminator].annotation)[0])


def _field_shape(info: FieldInfo) -> tuple[list[type], str, str | None]:
    return _shape(info.annotation, info.discriminator if isinstance(info.discriminator, str) else None)


def children(path: str, info: FieldInfo) -> list[tuple[str, type]]:
    """(path, model) of every section a field holds: one per variant of a discriminated union."""
    models, suffix, discriminator = _field_shape(info)
    if discriminator and len(models) > 1:
        return [(f"{path}{suffix}.{_tag(m, discriminator)}", m) for m in models]
    return [(f"{path}{suffix}", m) for m in models]


def type_text(annotation: Any) -> str:
    annotation, _ = _strip(annotation)
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is Literal:
        return "|".join(str(v) for v in typing.get_args(annotation))
    if origin is list:
        return f"list[{type_text(typing.get_args(annotation)[0])}]"
    if origin is dict:
        return "mapping"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(type_text(a) for a in typing.get_args(annotation)))
    if _is_model(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "min length ", "max_length": "max length "}


def constraints_text(info: FieldInfo) -> str:
    found = []
    for item in info.metadata:
        for attribute, symbol in _BOUNDS.items():
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{symbol}{value}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            found.append(f"pattern {pattern}")
    return ", ".join(found)


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return ""
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "{} (every field at its default)"
    return json.dumps(value, default=str)


def _canonical() -> dict[type, str]:
    """Each section model's shortest path (breadth first over both roots)."""
    seen: dict[type, str] = {}
    queue = [(path, model) for path, model in ROOTS.items()]
    while queue:
        path, model = queue.pop(0)
        if model in seen:
            continue
        seen[model] = path
        for name, info in model.model_fields.items():
            queue += [kid for kid in children(_join(path, name), info) if kid[1] not in seen]
    return seen


def _field_type(info: FieldInfo, kids: list[tuple[str, type]]) -> str:
    """type_text, except that a discriminated union names its variants: ``one of hf|vllm (by name)``."""
    text, discriminator = type_text(info.annotation), _field_shape(info)[2]
    if discriminator and len(kids) > 1:
        variants = "|".join(kid_path.rsplit(".", 1)[-1] for kid_path, _ in kids)
        many = "list of " if text.startswith("list[") else ""
        text = f"{many}one of {variants} (by {discriminator})" + (" | null" if text.endswith("| null") else "")
    return text


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def sections() -> list[SectionDoc]:
    """Every section, each once at its shortest path, in file order (a section, then what it holds)."""
    canonical = _canonical()
    found: list[SectionDoc] = []

    def visit(path: str, model: type) -> None:
        rows, below = [], []
        for name, info in model.model_fields.items():
            field_path = _join(path, name)
            kids = children(field_path, info)
            here = [kid for kid in kids if canonical[kid[1]] == kid[0]]
            elsewhere = tuple(canonical[m] or "job spec" for p, m in kids if (p, m) not in here)
            rows.append(FieldDoc(
                path=field_path, model=model, name=name, type=_field_type(info, kids),
                constraints=constraints_text(info), required=info.is_required(), default=default_text(info),
                description=info.description or "", see=elsewhere,
            ))
            below += here
        found.append(SectionDoc(path, model, tuple(rows)))
        for kid_path, kid in below:
            visit(kid_path, kid)

    for path, model in ROOTS.items():
        visit(path, model)
    return found


def all_fields() -> list[FieldDoc]:
    return [row for section in sections() for row in section.fields]


def _parts(section: str) -> list[str]:
    """``method.cascade.stages[0].method`` -> [method, cascade, stages, method] (list indexes dropped)."""
    parts = []
    for part in section.replace("[", ".").replace("]", "").split("."):
        if part and not part.isdigit():
            parts.append(part)
    return parts


def resolve(section: str) -> tuple[list[SectionDoc], FieldDoc | None]:
    """The sections (each with what it holds) a dotted path names, or the one field it names.

    Any path a spec or an error message uses works, list indexes included (``method.cascade.stages[0].method``);
    ``job`` is the whole job spec and ``pipeline`` the whole pipeline spec.
    """
    parts = _parts(section)
    root = ""
    if parts and parts[0] in ("job", "pipeline"):
        root = "pipeline" if parts.pop(0) == "pipeline" else ""
    canonical = _canonical()
    targets: list[type] = [ROOTS[root]]
    walked = root
    field: FieldDoc | None = None
    for index, part in enumerate(parts):
        models = {m: None for m in targets}
        target = next(iter(models)) if len(models) == 1 else None
        tags = {p.rsplit(".", 1)[-1]: m for m in models for p in [canonical[m]]}
        if target is None and part in tags:  # the variant of a discriminated union
            targets, walked = [tags[part]], _join(walked, part)
            continue
        if target is None or part not in target.model_fields:
            known = sorted(target.model_fields) if target is not None else sorted(tags)
            where = walked or ("pipeline spec" if root else "job spec")
            raise SpecError(f"`batchlabel schema {section}`: {where} has no field or section {part!r} (it has: {', '.join(known)}).")
        info = target.model_fields[part]
        walked = _join(walked, part)
        kids = [m for _, m in children(walked, info)]
        if not kids:
            if index != len(parts) - 1:
                raise SpecError(f"`batchlabel schema {section}`: {walked} is a field, not a section.")
            field = next(row for s in sections() for row in s.fields if s.model is target and row.name == part)
            return [], field
        targets = kids
    wanted = {canonical[m] for m in targets}
    found = [s for s in sections() if any(_inside(s.path, w) for w in wanted)]
    return found, None


def _inside(path: str, top: str) -> bool:
    if top == "":
        return not path.startswith("pipeline")
    return path == top or path.startswith((top + ".", top + "["))


def spec_models() -> set[type]:
    """Every section model reachable from the job and pipeline specs."""
    return {section.model for section in sections()}


def render(found: Iterable[SectionDoc]) -> str:
    blocks = []
    for section in found:
        blocks.append("\n".join([section.title, *(row.line() for row in section.fields)]))
    return "\n\n".join(blocks) + "\n"
