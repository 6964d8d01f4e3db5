"""How labels are derived: one spec per method (embed, prompt, score, classifier, custom, and a cascade of
those), a discriminated union on ``name``, plus the few-shot settings that prompt and score share."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from batchlabel.config.base import SPEED_ONLY, StrictModel
from batchlabel.config.engines import EngineSpec, LocalEngineSpec
from batchlabel.config.input import SplitSpec
from batchlabel.config.runtime import RuntimeSpec

BUNDLED_ENCODER = "bundled:all-MiniLM-L6-v2"


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
    backend: Literal["torch", "onnx", "onnx-int8", "static"] = Field(
        "torch",
        description="How the encoder runs (changes the embeddings, so the head must be trained on the same "
        "backend): torch = transformers fp32; onnx = the encoder exported once to ONNX, run by ONNX Runtime "
        "(fp32, float-rounding differences only); onnx-int8 = that export with dynamic int8 weights (faster, "
        "slightly different embeddings); static = a model2vec static embedding distilled once from the encoder "
        "(no transformer at label time: far faster, a little less accurate). Exports and distillations are "
        "cached beside the encoder. onnx*/static need the cpu-fast extra (bash scripts/setup.sh dev,cpu-fast).",
    )
    encode_batch_size: int = Field(
        8, ge=1, description="Texts per encoder forward pass; texts are sorted by length first (less padding).",
        json_schema_extra=SPEED_ONLY,
    )


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
    engine: EngineSpec = Field(description="What runs the model (hf, vllm, openai, together).")
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
    variant: Literal["full", "label", "first_token"] = Field(
        "full",
        description="full = log-prob of the whole label + the end of turn; label = the label's own tokens only "
        "(no end of turn: labels that are word prefixes, earn/earnings, are not penalised; refused when one "
        "label's tokens are a prefix of another's); first_token = its first token only.",
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
    def _needs_logprobs(cls, value: Any) -> Any:
        if not isinstance(value, LocalEngineSpec):
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
        "(a LoRA adapter is merged first; the vllm extra: bash scripts/setup.sh dev,vllm).",
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
    backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "torch",
        description="engine hf: how the model runs. torch = transformers; onnx = the (merged) model exported "
        "once to ONNX, run by ONNX Runtime (fp32; float-rounding differences only); onnx-int8 = that export "
        "with dynamic int8 weights (faster, slightly different scores). Needs dtype float32 and the cpu-fast "
        "extra (bash scripts/setup.sh dev,cpu-fast).",
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="vllm on GPU: share of GPU memory it may use.", json_schema_extra=SPEED_ONLY
    )

    @field_validator("backend")
    @classmethod
    def _backend_needs_hf(cls, value: str, info: Any) -> str:
        if value != "torch" and info.data.get("engine") == "vllm":
            raise ValueError("backend onnx/onnx-int8 runs on engine hf, not vllm")
        if value != "torch" and info.data.get("dtype", "float32") != "float32":
            raise ValueError("backend onnx/onnx-int8 exports the float32 model: set dtype float32")
        return value


class CustomMethod(StrictModel):
    """Your own labeler class (trusted code, like a Ray job entrypoint): any `Labeler` subclass."""

    name: Literal["custom"] = Field(description="Method name.")
    labeler: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'package.module:Class' implementing batchlabel.methods.base.Labeler, built as Class(spec).",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Free-form options passed to the class.")


StageMethodSpec = Annotated[
    Union[EmbedMethod, PromptMethod, ScoreMethod, ClassifierMethod, CustomMethod], Field(discriminator="name")
]


class CascadeStage(StrictModel):
    """One stage of a cascade: a full method spec, the confidence below which its rows go on, its own resources."""

    method: StageMethodSpec = Field(description="How this stage labels (embed, prompt, score, classifier, custom).")
    min_confidence: float | None = Field(
        None, gt=0, le=1, description="Every stage but the last: rows labeled with a lower confidence (or an error) "
        "go on to the next stage. Refused on the last stage, which labels whatever reaches it.",
    )
    runtime: RuntimeSpec | None = Field(
        None, description="This stage's actor pool: fields given here override the job's runtime (e.g. actors, "
        "cpus_per_actor, gpus_per_actor, threads_per_actor, batch_size).", json_schema_extra=SPEED_ONLY,
    )


class CascadeMethod(StrictModel):
    """Cheap labeler first: each stage relabels only the rows the stage before it was unsure about."""

    name: Literal["cascade"] = Field(description="Method name.")
    stages: list[CascadeStage] = Field(
        min_length=2, description="Ordered stages, one actor pool each; they share the job's labels."
    )

    @model_validator(mode="after")
    def _thresholds(self) -> "CascadeMethod":
        *escalating, last = self.stages
        for number, stage in enumerate(escalating, start=1):
            if stage.min_confidence is None:
                raise ValueError(f"stages[{number - 1}] needs min_confidence: the rows below it go to stage {number + 1}")
        if last.min_confidence is not None:
            raise ValueError(
                f"stages[{len(self.stages) - 1}]: the last stage labels every row that reaches it; remove its min_confidence"
            )
        return self


MethodSpec = Annotated[
    Union[EmbedMethod, PromptMethod, ScoreMethod, ClassifierMethod, CustomMethod, CascadeMethod],
    Field(discriminator="name"),
]
