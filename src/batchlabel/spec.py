"""Job spec: YAML → Pydantic models. Every field is described; unknown fields are refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchlabel.errors import SpecError
from batchlabel.overrides import apply_overrides

BUNDLED_ENCODER = "bundled:all-MiniLM-L6-v2"


class StrictModel(BaseModel):
    """Base for every spec section: unknown fields are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


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


class LabelSpec(StrictModel):
    """One label of the label set."""

    name: str = Field(min_length=1, description="Canonical label name written to the output.")
    description: str | None = Field(None, description="What the label means (used in prompts).")
    aliases: list[str] = Field(default_factory=list, description="Other spellings mapped to this label.")


class StorageSpec(StrictModel):
    """Object-storage settings. Credentials come only from the standard AWS environment variables."""

    endpoint_url: str | None = Field(
        None, description="S3 endpoint (e.g. http://127.0.0.1:9000); default: $AWS_ENDPOINT_URL or AWS."
    )
    region: str | None = Field(None, description="S3 region; default: $AWS_DEFAULT_REGION or us-east-1.")


class EmbedMethod(StrictModel):
    """Sentence embeddings (mean pooled, L2-normalised) followed by a trained linear head."""

    name: Literal["embed"] = Field(description="Method name.")
    encoder: str = Field(
        BUNDLED_ENCODER,
        description="Encoder model: 'bundled:all-MiniLM-L6-v2', a local directory, an s3:// prefix or a hub id.",
    )
    head: str | None = Field(
        None, description="Linear head directory (local or s3://). Default: train.output of this spec."
    )
    max_length: int = Field(256, gt=0, le=8192, description="Tokens kept per text (longer texts are truncated).")
    encode_batch_size: int = Field(
        8, ge=1, description="Texts per encoder forward pass; texts are sorted by length first (less padding)."
    )


MethodSpec = Annotated[Union[EmbedMethod], Field(discriminator="name")]


class TrainSpec(StrictModel):
    """How `batchlabel train` (or `run` with inline training) builds the model."""

    method: Literal["head"] = Field("head", description="What to train: 'head' = linear head on embeddings.")
    input: InputSpec = Field(description="Gold-labeled training data (gold_column is required).")
    output: str = Field(description="Directory (local or s3://) the trained model is written to.")
    inline: bool = Field(
        False, description="If true, `run` trains first when no trained model exists at `output`."
    )
    c: float = Field(10.0, gt=0, description="Inverse L2 regularisation strength of the logistic-regression head.")
    max_iter: int = Field(2000, gt=0, description="Optimizer iterations for the head.")
    seed: int = Field(0, description="Random seed.")

    @field_validator("input")
    @classmethod
    def _needs_gold(cls, value: InputSpec) -> InputSpec:
        if not value.gold_column:
            raise ValueError("train.input.gold_column must name the column with the gold labels")
        return value


class RuntimeSpec(StrictModel):
    """How the work is spread over Ray. None of these fields change the labels."""

    actors: int = Field(1, ge=1, description="Labeling actors (one per GPU, or per CPU slot).")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs Ray reserves per actor (fractions allowed).")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per actor (0 = CPU only).")
    threads_per_actor: int | None = Field(
        None, ge=1, description="Torch threads per actor; default: the node's CPUs divided by actors."
    )
    batch_size: int = Field(64, ge=1, description="Rows per labeling batch (and per Ray block).")
    object_store_mb: int = Field(256, ge=80, description="Object store size of a local Ray (bounds memory).")
    stall_timeout_s: float = Field(900.0, gt=0, description="Fail if the pipeline makes no progress this long.")


class OutputSpec(StrictModel):
    """Where labeled Parquet and the report go."""

    path: str = Field(description="Output directory, local or s3://.")
    shard_rows: int = Field(1000, ge=1, description="Rows per committed output shard (a resume unit).")
    keep_text: bool = Field(False, description="Also write the input text into the output.")


class EvalSpec(StrictModel):
    """Evaluation against gold labels."""

    enabled: bool = Field(True, description="Write a report (metrics need input.gold_column).")


class JobSpec(StrictModel):
    """A batchlabel job: label `input` with `method` into `output`."""

    name: str = Field("job", description="Job name (used in logs and reports).")
    input: InputSpec = Field(description="The corpus to label.")
    labels: list[LabelSpec] = Field(min_length=2, description="The label set (names, descriptions, aliases).")
    method: MethodSpec = Field(description="How labels are derived (embed, ...).")
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
        if isinstance(self.method, EmbedMethod) and self.method.head is None and self.train is None:
            raise ValueError("method.head is required when the spec has no train section")
        return self

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    def head_path(self) -> str:
        """The trained model location used by the method."""
        if isinstance(self.method, EmbedMethod) and self.method.head:
            return self.method.head
        assert self.train is not None
        return self.train.output

    def result_hash(self) -> str:
        """Hash of everything that decides which rows are labeled and how (not runtime/eval settings)."""
        relevant = self.model_dump(mode="json", include={"input", "labels", "method", "train"})
        relevant["shard_rows"] = self.output.shard_rows
        relevant["keep_text"] = self.output.keep_text
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-after"))
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; `batchlabel run --help` and the README list the fields)"
        elif item["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{loc or '(top level)'}: {msg}")
    return f"Invalid job spec {source}: " + "; ".join(lines) + "."


def parse_job(data: Any, source: str = "") -> JobSpec:
    """Validate a raw dict as a JobSpec, raising a SpecError that names each bad field."""
    if not isinstance(data, dict):
        raise SpecError(f"Invalid job spec {source}: the top level must be a mapping of fields, got {type(data).__name__}.")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(err, source)) from None


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
