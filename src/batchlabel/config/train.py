"""How `batchlabel train` (or `run` with inline training) builds the model: one spec per trainer, a
discriminated union on ``method`` (head | lora | full | instruct). Every trainer reads the same gold input
and holds out the same validation share, picked by a stable hash of the row id (``eval_fraction``)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from batchlabel.config.base import StrictModel
from batchlabel.config.input import InputSpec

#: which labeling method uses what each trainer writes
TRAINS_FOR = {"head": "embed", "lora": "classifier", "full": "classifier", "instruct": "score"}


class _TrainBase(StrictModel):
    input: InputSpec = Field(description="Gold-labeled training data (gold_column is required).")
    output: str = Field(description="Directory (local or s3://) the trained model is written to.")
    inline: bool = Field(False, description="If true, `run` trains first when no trained model exists at `output`.")
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of the training rows held out for validation (stable hash of the id)."
    )
    seed: int = Field(0, description="Random seed.")

    @field_validator("input")
    @classmethod
    def _needs_gold(cls, value: InputSpec) -> InputSpec:
        if not value.gold_column:
            raise ValueError("train.input.gold_column must name the column with the gold labels")
        return value


class HeadTrain(_TrainBase):
    """A logistic-regression head on the embed method's sentence embeddings."""

    method: Literal["head"] = Field(description="Trainer: linear head on embeddings (for method embed).")
    c: float = Field(10.0, gt=0, description="Inverse L2 regularisation strength of the logistic-regression head.")
    max_iter: int = Field(2000, gt=0, description="Optimizer iterations for the head.")


class LoraSpec(StrictModel):
    """LoRA adapter settings (peft)."""

    r: int = Field(16, ge=1, description="Rank of the LoRA update matrices.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names that get adapters (e.g. q_proj, v_proj), or 'all-linear'.",
    )


class QLoraSpec(LoraSpec):
    """LoRA settings of a sequence-classifier adapter, which may load its base in 4 bits."""

    qlora: bool = Field(False, description="Load the base in 4 bits (bitsandbytes, GPU only).")


class _FineTuneBase(_TrainBase):
    base_model: str | None = Field(
        None, description="The model to fine-tune (local HF dir, s3://, 'bundled:all-MiniLM-L6-v2' or hub id)."
    )
    epochs: float = Field(3.0, gt=0, description="Training epochs.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate (LoRA likes ~1e-4..5e-4).")
    batch_size: int = Field(16, ge=1, description="Training rows per device step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps accumulated per optimizer step.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps with linear LR warm-up.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after the warm-up."
    )
    max_length: int = Field(256, gt=0, le=32768, description="Tokens kept per training text.")
    padding_side: Literal["left", "right"] = Field("right", description="Padding side used in training and labeling.")
    eval_steps: int | None = Field(
        None, gt=0, description="Evaluate + checkpoint every N steps (default: at the end of each epoch)."
    )
    early_stopping_patience: int | None = Field(
        2, ge=1, description="Stop after N evaluations without a better validation loss (null = never)."
    )
    checkpoint_dir: str | None = Field(
        None, description="Local directory for Trainer checkpoints (default: '<output>.checkpoints')."
    )
    resume_from_checkpoint: bool | str = Field(
        False, description="true = resume from the last checkpoint in checkpoint_dir; or a checkpoint path."
    )

    @model_validator(mode="after")
    def _needs_base(self):
        if not self.base_model:
            raise ValueError(f"train.base_model is required for train.method {getattr(self, 'method', '?')!r}")
        return self


class LoraTrain(_FineTuneBase):
    """A LoRA adapter on base_model used as a sequence classifier (for method classifier)."""

    method: Literal["lora"] = Field(description="Trainer: LoRA sequence classifier (for method classifier).")
    lora: QLoraSpec = Field(default_factory=QLoraSpec, description="LoRA settings.")


class FullTrain(_FineTuneBase):
    """A full fine-tune of base_model as a sequence classifier (for method classifier)."""

    method: Literal["full"] = Field(description="Trainer: full fine-tune (for method classifier).")


class InstructTrain(_FineTuneBase):
    """LoRA on base_model as a causal LM answering the score prompt with the label, merged (for method score
    with engine.model = train.output)."""

    method: Literal["instruct"] = Field(description="Trainer: instruction-tuned causal LM (for method score).")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings.")


TrainSpec = Annotated[Union[HeadTrain, LoraTrain, FullTrain, InstructTrain], Field(discriminator="method")]
FineTuneTrain = (LoraTrain, FullTrain, InstructTrain)
