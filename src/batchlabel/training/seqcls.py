"""train.method lora | full: fine-tune a sequence classifier with the HF Trainer (full, or LoRA with peft,
task_type SEQ_CLS), for the classifier method.

Validation rows come from a stable hash of the row id; the Trainer evaluates (and checkpoints) each
epoch or every ``eval_steps``, keeps the best model by validation loss, stops early after
``early_stopping_patience`` evaluations without improvement, and can resume from its last checkpoint
(``training.hf_trainer``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from batchlabel.config import FullTrain, JobSpec, LoraTrain
from batchlabel.errors import BatchlabelError
from batchlabel.models.encoders import resolve_encoder
from batchlabel.models.tokens import prepare_tokenizer, tokenize
from batchlabel.report.metrics import build_report
from batchlabel.training.data import Rows, TrainingData
from batchlabel.training.hf_trainer import (
    Summary,
    artifact_marker,
    publish_run,
    run_trainer,
    start_fit,
    summary,
    train_finetuned,
    uses_qlora,
)
from batchlabel.training.result import TrainResult


def train_sequence_classifier(spec: JobSpec, progress: bool = True) -> TrainResult:
    """`batchlabel train` for train.method lora | full (see ``hf_trainer.train_finetuned``)."""
    if not isinstance(spec.train, (LoraTrain, FullTrain)):
        raise BatchlabelError("train_sequence_classifier needs train.method lora or full.")
    return train_finetuned(spec, progress, fit)


def load_model(train: LoraTrain | FullTrain, base_dir: str, labels: list[str], pad_token_id: int):
    """The base model with a fresh classification head for ``labels`` (wrapped by peft for LoRA)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
        "ignore_mismatched_sizes": True,  # re-head a model fine-tuned for another label set
    }
    if uses_qlora(train):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    else:
        kwargs["dtype"] = torch.float32
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base_dir, **kwargs)
    except (OSError, ValueError) as err:
        raise BatchlabelError(f"Cannot load {train.base_model} as a sequence classifier: {str(err).splitlines()[0]}") from None
    model.config.pad_token_id = pad_token_id
    if not isinstance(train, LoraTrain):
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    if uses_qlora(train):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=train.lora.r,
        lora_alpha=train.lora.alpha,
        lora_dropout=train.lora.dropout,
        target_modules=train.lora.target_modules,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise BatchlabelError(
            f"LoRA target modules {train.lora.target_modules} do not match {train.base_model}: "
            f"{str(err).splitlines()[0]} Set train.lora.target_modules (e.g. q_proj, v_proj for Llama-style models, "
            "query, value for BERT-style ones)."
        ) from None


def _encode(rows: Rows, tokenizer, max_length: int) -> list[dict]:
    ids, _ = tokenize(tokenizer, rows.texts, max_length)
    return [{"input_ids": row, "labels": label} for row, label in zip(ids, rows.labels)]


def _metrics_fn(labels: list[str]):
    from batchlabel.report.metrics import compute_metrics

    def compute(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.asarray(logits).argmax(axis=-1)
        metrics = compute_metrics([labels[i] for i in prediction.label_ids], [labels[i] for i in predicted], labels)
        return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}

    return compute


def fit(spec_json: str, progress: bool = True) -> Summary:
    """Load data, fine-tune, evaluate and (on rank 0) publish the artifact; returns a small summary dict."""
    ctx = start_fit(spec_json, progress)
    spec, train, data, console = ctx.spec, ctx.train, ctx.data, ctx.console
    assert isinstance(train, (LoraTrain, FullTrain))
    console.print(
        f"fine-tuning ({train.method}) {train.base_model} on {len(data.train)} rows, {len(data.validation)} held out "
        f"for validation ({data.skipped} skipped) from {train.input.path}"
    )
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding

    base_dir = resolve_encoder(train.base_model or "", ctx.storage)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(base_dir), train.padding_side)
    model = load_model(train, base_dir, spec.label_names, tokenizer.pad_token_id)
    if isinstance(train, LoraTrain) and progress:
        trainable, total = model.get_nb_trainable_parameters()
        console.print(f"LoRA: {trainable:,} trainable of {total:,} parameters")
    train_rows = _encode(data.train, tokenizer, train.max_length)
    val_rows = _encode(data.validation, tokenizer, train.max_length)
    run = run_trainer(
        ctx, model, train_rows, val_rows, DataCollatorWithPadding(tokenizer), progress, _metrics_fn(spec.label_names)
    )
    validation, report = _evaluate(run.trainer, data, spec.label_names) if val_rows else ({}, {})
    result = summary(ctx, run, validation)
    if not run.trainer.is_world_process_zero():
        return result
    if validation:
        console.print(
            f"validation ({validation['rows']} held-out rows): accuracy {validation['accuracy']:.4f}, "
            f"macro-F1 {validation['macro_f1']:.4f}"
        )
    marker = artifact_marker(
        ctx, run, validation,
        kind=train.method,
        base_model=train.base_model if isinstance(train, LoraTrain) else None,
        padding_side=train.padding_side,
        pad_token_id=tokenizer.pad_token_id,
        best_checkpoint=run.trainer.state.best_model_checkpoint,
        torch=torch.__version__,
    )
    publish_run(ctx, run, run.trainer.model, tokenizer, marker, report)
    wall = time.monotonic() - ctx.started
    console.print(
        f"{train.method} model written to {train.output} in {wall:.1f} s (training {run.train_seconds:.1f} s)"
    )
    return result


def _evaluate(trainer, data: TrainingData, labels: list[str]) -> tuple[dict, dict]:
    """Validation metrics (same as `run`'s report) of the final (best) model."""
    import pyarrow as pa
    import torch

    result = trainer.predict(trainer.eval_dataset)
    logits = result.predictions[0] if isinstance(result.predictions, tuple) else result.predictions
    probs = torch.softmax(torch.as_tensor(np.asarray(logits), dtype=torch.float32), dim=-1).numpy()
    best = probs.argmax(axis=1)
    table = pa.table(
        {
            "id": data.validation.ids,
            "label": [labels[i] for i in best],
            "gold": [labels[i] for i in data.validation.labels],
            "confidence": [float(probs[r, i]) for r, i in enumerate(best)],
            "error": pa.nulls(len(best), pa.string()),
        }
    )
    report = build_report(table, labels, {"split": "validation", "loss": float(result.metrics.get("test_loss", 0.0))})
    metrics = report.get("metrics", {})
    validation = {
        "rows": metrics.get("rows", 0),
        "accuracy": metrics.get("accuracy", 0.0),
        "macro_f1": metrics.get("macro_f1", 0.0),
        "loss": float(result.metrics.get("test_loss", 0.0)),
    }
    return validation, report
