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
#: marks a field that changes only speed or robustness, not the labels: left out of `JobSpec.result_hash`,
#: so a resumed run may change it (batch sizes, concurrency, timeouts, GPU memory share)
SPEED_ONLY = {"speed_only": True}


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
        8, ge=1, description="Texts per encoder forward pass; texts are sorted by length first (less padding).",
        json_schema_extra=SPEED_ONLY,
    )


class EngineSpec(StrictModel):
    """What runs the LLM (prompt and score methods). Fields that an engine does not use are ignored by it."""

    name: Literal["hf", "vllm", "openai", "together"] = Field(
        description="hf = transformers; vllm = offline vllm.LLM in the actor; openai = any OpenAI-compatible "
        "server; together = langchain-together ChatTogether."
    )
    model: str = Field(
        description="Model: a local HF directory, an s3:// prefix (downloaded to a local cache) or a hub id; "
        "for openai/together the model name the server knows."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype for hf/vllm (fp32 is fastest on CPU)."
    )
    max_model_len: int = Field(2048, ge=64, description="Context length (prompt + answer) for hf/vllm.")
    max_article_tokens: int = Field(
        384, ge=8, description="Each article is cut to this many tokens before it enters a prompt (flagged truncated)."
    )
    batch_size: int = Field(
        8, ge=1, description="hf: prompts per generate/forward call.", json_schema_extra=SPEED_ONLY
    )
    prefix_caching: bool = Field(
        True, description="vllm: automatic prefix caching of the shared prompt prefix.", json_schema_extra=SPEED_ONLY
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="vllm: GPUs per model (tensor parallel).", json_schema_extra=SPEED_ONLY
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="vllm on GPU: share of GPU memory it may use.", json_schema_extra=SPEED_ONLY
    )
    structured_backend: Literal["auto", "xgrammar", "guidance", "outlines"] = Field(
        "auto", description="vllm: structured-output backend."
    )
    base_url: str | None = Field(None, description="openai/together: server URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="openai/together: environment variable holding the API key (never in the spec)."
    )
    concurrency: int = Field(
        4, ge=1, le=256, description="openai/together: requests in flight per actor.", json_schema_extra=SPEED_ONLY
    )
    timeout_s: float = Field(
        60.0, gt=0, description="openai/together: timeout of one request.", json_schema_extra=SPEED_ONLY
    )
    request_retries: int = Field(
        4, ge=0, le=20, description="openai/together: retries with exponential backoff on 429/5xx/timeouts.",
        json_schema_extra=SPEED_ONLY,
    )
    seed: int = Field(0, description="Sampling seed (decoding is greedy; the seed only matters for ties).")

    @model_validator(mode="after")
    def _remote_needs_url(self) -> "EngineSpec":
        if self.name == "openai" and not self.base_url:
            raise ValueError("engine.base_url is required for the openai engine (e.g. http://127.0.0.1:8000/v1)")
        return self


class FewShotSourceSpec(StrictModel):
    """Labeled examples for few-shot prompts."""

    path: str = Field(description="Parquet/CSV/JSONL file (local path or s3://) with labeled examples.")
    text_column: str = Field("text", description="Column holding the example text.")
    gold_column: str = Field("label", description="Column holding the example's label.")
    id_column: str | None = Field(None, description="Column holding example ids (needed by 'fixed' ids and by split).")
    split: SplitSpec | None = Field(
        None, description="Keep one part of a hash split of the ids (e.g. part: train when the input keeps test)."
    )


class FewShotSpec(StrictModel):
    """Few-shot examples placed before the article, as earlier user/assistant turns."""

    k: int = Field(4, ge=1, le=64, description="Number of examples per prompt.")
    strategy: Literal["fixed", "random", "stratified", "nearest"] = Field(
        "stratified",
        description="fixed = the first k rows (or `ids`); random = k random rows; stratified = round-robin over "
        "labels; nearest = the k nearest rows to each article by sentence embedding (breaks the shared prefix).",
    )
    source: FewShotSourceSpec = Field(description="Where the labeled examples are.")
    ids: list[str] | None = Field(None, description="strategy fixed: exactly these example ids, in this order.")
    seed: int = Field(0, description="Seed for the random and stratified strategies.")
    encoder: str = Field(BUNDLED_ENCODER, description="strategy nearest: sentence encoder used for the neighbours.")
    max_example_tokens: int = Field(96, ge=8, description="Each example text is cut to this many tokens.")


class PromptMethod(StrictModel):
    """Prompted LLM classification with structured (Pydantic-validated) output, optionally many items per prompt."""

    name: Literal["prompt"] = Field(description="Method name.")
    engine: EngineSpec = Field(description="What runs the model.")
    instructions: str | None = Field(None, description="Task instructions placed first in the system prompt.")
    items_per_prompt: int = Field(
        1, ge=1, le=64, description="Articles per prompt; >1 asks for a list of {id, label}, validated and re-asked."
    )
    few_shot: FewShotSpec | None = Field(None, description="Few-shot examples (none = zero-shot).")
    rationale: bool = Field(False, description="Ask for a short rationale before the label (more output tokens).")
    max_retries: int = Field(
        2, ge=0, le=10, description="Re-asks of a failed single item; failed groups are first split in halves."
    )
    constrained: bool = Field(True, description="Constrained decoding (choice / JSON schema) where the engine allows it.")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Answer token budget; default: enough for the longest label (x items, + rationale)."
    )


class ScoreMethod(StrictModel):
    """Log-probability of each label string as the assistant's answer; softmax over labels is the confidence."""

    name: Literal["score"] = Field(description="Method name.")
    engine: EngineSpec = Field(description="What runs the model (hf or vllm: needs token log-probabilities).")
    instructions: str | None = Field(None, description="Task instructions placed first in the system prompt.")
    variant: Literal["full", "first_token"] = Field(
        "full", description="full = log-prob of the whole label (+ end of turn); first_token = its first token only."
    )
    calibrate: bool = Field(
        False, description="Contextual calibration: subtract each label's score on content-free inputs."
    )
    calibration_inputs: list[str] = Field(
        default_factory=lambda: ["N/A"], min_length=1, description="Content-free inputs used by calibrate."
    )
    few_shot: FewShotSpec | None = Field(None, description="Few-shot examples (none = zero-shot).")

    @field_validator("engine")
    @classmethod
    def _needs_logprobs(cls, value: EngineSpec) -> EngineSpec:
        if value.name not in ("hf", "vllm"):
            raise ValueError("the score method needs prompt log-probabilities: use engine hf or vllm")
        return value


class ClassifierMethod(StrictModel):
    """A trained sequence classifier: a fully fine-tuned model, or a LoRA adapter on its base (`batchlabel train`)."""

    name: Literal["classifier"] = Field(description="Method name.")
    model: str | None = Field(
        None, description="Trained model directory (local or s3://) written by `batchlabel train`. Default: train.output."
    )
    base_model: str | None = Field(
        None, description="LoRA only: override the base model recorded in the adapter (local dir, s3:// or hub id)."
    )
    merge_adapter: bool = Field(
        False, description="LoRA only: merge the adapter into the base weights at load (faster; tiny numeric changes)."
    )
    engine: Literal["hf", "vllm"] = Field(
        "hf",
        description="What runs the model: hf = transformers (+ peft); vllm = vLLM's pooling runner "
        "(a LoRA adapter is merged first; pip install 'batchlabel[vllm]').",
    )
    max_length: int | None = Field(
        None, gt=0, le=32768, description="Tokens kept per text; default: the max_length the model was trained with."
    )
    batch_size: int = Field(
        16, ge=1, description="Texts per forward pass; texts are sorted by length first.", json_schema_extra=SPEED_ONLY
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype (fp32 is fastest on CPU)."
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="vllm on GPU: share of GPU memory it may use.", json_schema_extra=SPEED_ONLY
    )


class CustomMethod(StrictModel):
    """Your own labeler class (trusted code, like a Ray job entrypoint): any `Labeler` subclass."""

    name: Literal["custom"] = Field(description="Method name.")
    labeler: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'package.module:Class' implementing batchlabel.methods.base.Labeler, built as Class(spec).",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Free-form options passed to the class.")


MethodSpec = Annotated[
    Union[EmbedMethod, PromptMethod, ScoreMethod, ClassifierMethod, CustomMethod], Field(discriminator="name")
]


class LoraSpec(StrictModel):
    """LoRA adapter settings (peft)."""

    r: int = Field(16, ge=1, description="Rank of the LoRA update matrices.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names that get adapters (e.g. q_proj, v_proj), or 'all-linear'.",
    )
    qlora: bool = Field(False, description="Load the base in 4 bits (bitsandbytes, GPU only).")


class TrainSpec(StrictModel):
    """How `batchlabel train` (or `run` with inline training) builds the model."""

    method: Literal["head", "lora", "full", "instruct"] = Field(
        "head",
        description="What to train: 'head' = linear head on embeddings (method embed); 'lora' = LoRA adapter on "
        "base_model used as a sequence classifier; 'full' = full fine-tune of base_model (method classifier); "
        "'instruct' = LoRA on base_model as a causal LM answering the score prompt with the label, merged "
        "(method score with engine.model = train.output).",
    )
    base_model: str | None = Field(
        None,
        description="lora/full: the model to fine-tune (local HF dir, s3://, 'bundled:all-MiniLM-L6-v2' or hub id).",
    )
    epochs: float = Field(3.0, gt=0, description="lora/full: training epochs.")
    max_steps: int | None = Field(None, gt=0, description="lora/full: stop after this many optimizer steps.")
    learning_rate: float = Field(2e-5, gt=0, description="lora/full: peak learning rate (LoRA likes ~1e-4..5e-4).")
    batch_size: int = Field(16, ge=1, description="lora/full: training rows per device step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="lora/full: steps accumulated per optimizer step.")
    weight_decay: float = Field(0.0, ge=0, description="lora/full: AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="lora/full: share of steps with linear LR warm-up.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="lora/full: learning-rate schedule after the warm-up."
    )
    max_length: int = Field(256, gt=0, le=32768, description="lora/full: tokens kept per training text.")
    padding_side: Literal["left", "right"] = Field(
        "right", description="lora/full: padding side used in training and labeling."
    )
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of the training rows held out for validation (stable hash of the id)."
    )
    eval_steps: int | None = Field(
        None, gt=0, description="lora/full: evaluate + checkpoint every N steps (default: at the end of each epoch)."
    )
    early_stopping_patience: int | None = Field(
        2, ge=1, description="lora/full: stop after N evaluations without a better validation loss (null = never)."
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings (method lora).")
    checkpoint_dir: str | None = Field(
        None, description="lora/full: local directory for Trainer checkpoints (default: '<output>.checkpoints')."
    )
    resume_from_checkpoint: bool | str = Field(
        False, description="lora/full: true = resume from the last checkpoint in checkpoint_dir; or a checkpoint path."
    )
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

    @model_validator(mode="after")
    def _needs_base(self) -> "TrainSpec":
        if self.method in ("lora", "full", "instruct") and not self.base_model:
            raise ValueError(f"train.base_model is required for train.method {self.method!r}")
        if self.lora.qlora and self.method != "lora":
            raise ValueError("train.lora.qlora applies only to train.method 'lora'")
        return self


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
    workers: int = Field(
        1, ge=1, description="`batchlabel train` (lora/full): data-parallel workers; > 1 runs the same HF Trainer "
        "code in each worker of a Ray Train TorchTrainer (cpus_per_actor / gpus_per_actor per worker)."
    )
    stall_timeout_s: float = Field(900.0, gt=0, description="Fail if the pipeline makes no progress this long.")
    max_retries: int = Field(
        2, ge=0, description="Retries of a batch whose labeler call raised, before its rows become error rows."
    )


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
        reserved = {"id", "label", "confidence", "error", "truncated", "labeler_fingerprint", "text_hash", "gold", "text"}
        reserved |= {f"prob_{name}" for name in self.label_names}
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
            wants = {"head": "embed", "lora": "classifier", "full": "classifier", "instruct": "score"}[self.train.method]
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
        """Hash of everything that decides which rows are labeled and how (not runtime/eval or SPEED_ONLY fields)."""
        relevant = {name: _outcome(getattr(self, name)) for name in ("input", "labels", "method", "train")}
        relevant["shard_rows"] = self.output.shard_rows
        relevant["keep_text"] = self.output.keep_text
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _outcome(value: Any) -> Any:
    """JSON-able view of a spec value without its SPEED_ONLY fields."""
    if isinstance(value, BaseModel):
        return {
            name: _outcome(getattr(value, name))
            for name, info in type(value).model_fields.items()
            if not (isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("speed_only"))
        }
    if isinstance(value, (list, tuple)):
        return [_outcome(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _outcome(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


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
