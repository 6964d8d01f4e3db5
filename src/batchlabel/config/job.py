"""The job spec (YAML → Pydantic): input, labels, method, train, runtime, output, eval, storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from batchlabel.config.base import StrictModel, format_validation_error, outcome_of
from batchlabel.config.input import InputSpec
from batchlabel.config.labels import LabelSpec
from batchlabel.config.methods import ClassifierMethod, EmbedMethod, MethodSpec
from batchlabel.config.output import EvalSpec, OutputSpec
from batchlabel.config.overrides import apply_overrides
from batchlabel.config.runtime import RuntimeSpec
from batchlabel.config.storage import StorageSpec
from batchlabel.config.train import TRAINS_FOR, TrainSpec
from batchlabel.errors import SpecError
from batchlabel.hashing import stable_hash

#: output columns an input passthrough column may not take
RESERVED_COLUMNS = {
    "id", "label", "confidence", "error", "truncated", "labeler_fingerprint", "text_hash", "gold", "text",
    "labeled_by", "tokens_prompt", "tokens_cached", "tokens_output",
}


class JobSpec(StrictModel):
    """A batchlabel job: label `input` with `method` into `output`."""

    name: str = Field("job", description="Job name (used in logs and reports).")
    input: InputSpec = Field(description="The corpus to label.")
    labels: list[LabelSpec] = Field(min_length=2, description="The label set (names, descriptions, aliases).")
    method: MethodSpec = Field(description="How labels are derived (embed, prompt, score, classifier, custom).")
    train: TrainSpec | None = Field(None, description="How to train the model this job uses (optional).")
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, description="Ray resources and batching.")
    output: OutputSpec = Field(description="Where results are written.")
    eval: EvalSpec = Field(default_factory=EvalSpec, description="Evaluation settings.")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Object-storage endpoint settings.")

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_from_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("train", mode="before")
    @classmethod
    def _train_method_defaults_to_head(cls, value: Any) -> Any:
        if isinstance(value, dict) and "method" not in value:
            return {"method": "head", **value}
        return value

    @model_validator(mode="after")
    def _check(self) -> "JobSpec":
        seen: dict[str, str] = {}
        for label in self.labels:
            for spelling in [label.name, *label.aliases]:
                key = spelling.strip().lower()
                if key in seen:
                    raise ValueError(
                        f"labels: {spelling!r} appears twice (as {seen[key]!r} and in label {label.name!r})"
                    )
                seen[key] = label.name
        reserved = RESERVED_COLUMNS | {f"prob_{name}" for name in self.label_names}
        for column in self.input.passthrough:
            if column in reserved or column.startswith("_"):
                raise ValueError(
                    f"input.passthrough: column {column!r} clashes with an output column; rename it in the input"
                )
        if isinstance(self.method, EmbedMethod) and self.method.head is None and self.train is None:
            raise ValueError("method.head is required when the spec has no train section")
        if isinstance(self.method, ClassifierMethod) and self.method.model is None and self.train is None:
            raise ValueError("method.model is required when the spec has no train section")
        if self.train is not None:
            wants = TRAINS_FOR[self.train.method]
            if self.method.name in ("embed", "classifier", "score") and self.method.name != wants:
                raise ValueError(f"train.method {self.train.method!r} trains for method {wants!r}, not {self.method.name!r}")
        return self

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    def head_path(self) -> str:
        """The trained model location used by the method."""
        if isinstance(self.method, EmbedMethod) and self.method.head:
            return self.method.head
        if isinstance(self.method, ClassifierMethod) and self.method.model:
            return self.method.model
        assert self.train is not None
        return self.train.output

    def result_hash(self) -> str:
        """Hash of everything that decides which rows are labeled and how: the outcome of input, labels,
        method and train, plus the output's shard size and columns (runtime, eval and SPEED_ONLY fields excluded)."""
        relevant = {name: outcome_of(getattr(self, name)) for name in ("input", "labels", "method", "train")}
        relevant["shard_rows"] = self.output.shard_rows
        relevant["keep_text"] = self.output.keep_text
        return stable_hash(relevant)


def parse_job(data: Any, source: str = "") -> JobSpec:
    """Validate a raw dict as a JobSpec, raising a SpecError that names each bad field."""
    if not isinstance(data, dict):
        raise SpecError(f"Invalid job spec {source}: the top level must be a mapping of fields, got {type(data).__name__}.")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely, with a clear error for missing files and syntax errors."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"Job spec {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"Job spec {path} is not valid YAML{where}: {problem}.") from None
    except UnicodeDecodeError:
        raise SpecError(f"Job spec {path} is not UTF-8 text.") from None
    if data is None:
        data = {}
    return data


def load_job(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Load a job spec file, apply ``--set`` overrides, validate it."""
    data = load_yaml(path)
    if isinstance(data, dict):
        data = apply_overrides(data, overrides or [])
    return parse_job(data, source=str(path))
