"""Fine-tune a sequence classifier with the HF Trainer: full fine-tune, or LoRA (peft, task_type SEQ_CLS).

Validation rows come from a stable hash of the row id; the Trainer evaluates (and checkpoints) each
epoch or every ``eval_steps``, keeps the best model by validation loss, stops early after
``early_stopping_patience`` evaluations without improvement, and can resume from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from batchlabel.encoders import resolve_encoder
from batchlabel.errors import BatchlabelError
from batchlabel.report import build_report, write_report
from batchlabel.spec import JobSpec, TrainSpec
from batchlabel.storage import StorageSettings, is_remote, join
from batchlabel.training.artifacts import publish
from batchlabel.training.curves import curves_png
from batchlabel.training.data import Rows, TrainingData, load_training_data
from batchlabel.training.tokens import prepare_tokenizer, tokenize


def checkpoint_dir(train: TrainSpec) -> Path:
    """Local directory holding the Trainer's checkpoints (s3:// outputs get a local cache directory)."""
    if train.checkpoint_dir:
        if is_remote(train.checkpoint_dir):
            raise BatchlabelError("train.checkpoint_dir must be a local directory (checkpoints are not written to S3).")
        return Path(train.checkpoint_dir).expanduser()
    if is_remote(train.output):
        root = Path(os.environ.get("BATCHLABEL_CACHE", Path.home() / ".cache" / "batchlabel"))
        return root / "checkpoints" / hashlib.sha256(train.output.encode()).hexdigest()[:16]
    return Path(train.output.rstrip("/") + ".checkpoints").expanduser()


def check_device(train: TrainSpec) -> None:
    """QLoRA needs a CUDA GPU and bitsandbytes; say so before anything is loaded."""
    import torch

    if train.lora.qlora:
        if not torch.cuda.is_available():
            raise BatchlabelError(
                "train.lora.qlora loads the base model in 4 bits with bitsandbytes, which needs a CUDA GPU; this "
                "machine has none. Set train.lora.qlora: false to train a plain (fp32) LoRA adapter on CPU."
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise BatchlabelError("train.lora.qlora needs the bitsandbytes package (pip install bitsandbytes).") from None


def load_model(train: TrainSpec, base_dir: str, labels: list[str], pad_token_id: int):
    """The base model with a fresh classification head for ``labels`` (wrapped by peft for LoRA)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
        "ignore_mismatched_sizes": True,  # re-head a model fine-tuned for another label set
    }
    if train.lora.qlora:
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
    if train.method != "lora":
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    if train.lora.qlora:
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
    from batchlabel.report import compute_metrics

    def compute(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.asarray(logits).argmax(axis=-1)
        metrics = compute_metrics([labels[i] for i in prediction.label_ids], [labels[i] for i in predicted], labels)
        return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}

    return compute


def _last_checkpoint(directory: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(directory)) if directory.is_dir() else None


def _resume_point(train: TrainSpec, directory: Path) -> str | None:
    if isinstance(train.resume_from_checkpoint, str):
        if not Path(train.resume_from_checkpoint).is_dir():
            raise BatchlabelError(f"train.resume_from_checkpoint {train.resume_from_checkpoint} is not a directory.")
        return train.resume_from_checkpoint
    if train.resume_from_checkpoint:
        return _last_checkpoint(directory)
    return None


def training_arguments(train: TrainSpec, directory: Path, has_validation: bool, progress: bool):
    import torch
    from transformers import TrainingArguments

    every = "steps" if train.eval_steps else "epoch"
    return TrainingArguments(
        output_dir=str(directory),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        learning_rate=train.learning_rate,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_ratio,  # transformers 5: a value < 1 is a share of the total steps
        lr_scheduler_type=train.lr_scheduler,
        eval_strategy=every if has_validation else "no",
        save_strategy=every,
        eval_steps=train.eval_steps,
        save_steps=train.eval_steps,
        logging_strategy="steps",
        logging_steps=1,
        save_total_limit=2 if has_validation else 1,
        load_best_model_at_end=has_validation,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=train.seed,
        data_seed=train.seed,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        # sequence classifiers average their loss per batch; token averaging across DDP ranks would scale it
        average_tokens_across_devices=False,
    )


def train_sequence_classifier(spec: JobSpec, progress: bool = True):
    """`batchlabel train` for train.method lora | full; returns a TrainResult.

    runtime.workers == 1: the HF Trainer runs in this process. runtime.workers > 1: the same ``fit``
    runs in each worker of a Ray Train TorchTrainer (data parallel, DDP over gloo on CPU / NCCL on GPU);
    rank 0 evaluates and writes the artifact.
    """
    from batchlabel.train import TrainResult

    if spec.train is None or spec.train.method not in ("lora", "full", "instruct"):
        raise BatchlabelError("train_sequence_classifier needs train.method lora, full or instruct.")
    wants = "score" if spec.train.method == "instruct" else "classifier"
    if spec.method.name != wants:
        raise BatchlabelError(f"train.method {spec.train.method!r} needs method {wants!r}, not {spec.method.name!r}.")
    started = time.monotonic()
    check_device(spec.train)
    if spec.runtime.workers > 1:
        from batchlabel.training.distributed import fit_with_ray_train

        summary = fit_with_ray_train(spec, progress)
    else:
        summary = fit(spec.model_dump_json(), progress)
    return TrainResult(
        spec.train.output, summary["rows"], summary["skipped"], summary["validation"], time.monotonic() - started
    )


def fit(spec_json: str, progress: bool = True) -> dict[str, Any]:
    """Load data, fine-tune, evaluate and (on rank 0) publish the artifact; returns a small summary dict."""
    from rich.console import Console

    spec = JobSpec.model_validate_json(spec_json)
    train = spec.train
    assert train is not None
    if train.method == "instruct":
        from batchlabel.training.instruct import fit_instruct

        return fit_instruct(spec, progress)
    console = Console(stderr=True, quiet=not progress)
    started = time.monotonic()
    storage = StorageSettings.from_spec(spec.storage)
    data = load_training_data(spec, train, storage)
    console.print(
        f"fine-tuning ({train.method}) {train.base_model} on {len(data.train)} rows, {len(data.validation)} held out "
        f"for validation ({data.skipped} skipped) from {train.input.path}"
    )
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding, EarlyStoppingCallback, Trainer, set_seed
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    set_seed(train.seed)
    base_dir = resolve_encoder(train.base_model or "", storage)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(base_dir), train.padding_side)
    model = load_model(train, base_dir, spec.label_names, tokenizer.pad_token_id)
    if train.method == "lora" and progress:
        trainable, total = model.get_nb_trainable_parameters()
        console.print(f"LoRA: {trainable:,} trainable of {total:,} parameters")
    train_rows = _encode(data.train, tokenizer, train.max_length)
    val_rows = _encode(data.validation, tokenizer, train.max_length)
    has_validation = len(val_rows) > 0
    directory = checkpoint_dir(train)
    resume = _resume_point(train, directory)
    if train.resume_from_checkpoint and resume is None:
        console.print(f"no checkpoint in {directory}: training from the start")
    if resume is None and directory.exists() and os.environ.get("RANK", "0") == "0":
        shutil.rmtree(directory)  # stale checkpoints of an earlier run must not be mixed with this one
    callbacks = []
    if has_validation and train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train.early_stopping_patience))
    trainer = Trainer(
        model=model,
        args=training_arguments(train, directory, has_validation, progress),
        train_dataset=train_rows,
        eval_dataset=val_rows or None,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_metrics_fn(spec.label_names),
        callbacks=callbacks,
    )
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
    if resume:
        console.print(f"resuming from {resume}")
    output = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.monotonic() - started
    validation, report = _evaluate(trainer, data, spec.label_names) if has_validation else ({}, {})
    summary = {"rows": len(data.train), "skipped": data.skipped, "validation": validation, "step": trainer.state.global_step}
    if not trainer.is_world_process_zero():
        return summary
    if validation:
        console.print(
            f"validation ({validation['rows']} held-out rows): accuracy {validation['accuracy']:.4f}, "
            f"macro-F1 {validation['macro_f1']:.4f}"
        )
    log_history = trainer.state.log_history
    marker = {
        "kind": train.method,
        "labels": spec.label_names,
        "base_model": train.base_model if train.method == "lora" else None,
        "max_length": train.max_length,
        "padding_side": train.padding_side,
        "pad_token_id": tokenizer.pad_token_id,
        "train": train.model_dump(mode="json", exclude={"input", "output", "inline", "c", "max_iter"}),
        "train_input": train.input.path,
        "train_rows": len(data.train),
        "validation_rows": len(data.validation),
        "global_step": trainer.state.global_step,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "resumed_from": resume,
        "training_loss": output.training_loss,
        "validation": validation,
        "torch": torch.__version__,
        "world_size": trainer.args.world_size,
    }
    with tempfile.TemporaryDirectory(prefix="batchlabel-train-") as staging:
        local = Path(staging)
        trainer.model.save_pretrained(str(local))
        tokenizer.save_pretrained(str(local))
        (local / "training_log.json").write_text(json.dumps(log_history, indent=2))
        (local / "training_curves.png").write_bytes(curves_png(log_history))
        if report:
            eval_dir = local / "eval"
            write_report(report, str(eval_dir), StorageSettings(), f"batchlabel validation report: {spec.name}")
        publish(local, train.output, storage, marker)
    wall = time.monotonic() - started
    console.print(f"{train.method} model written to {train.output} in {wall:.1f} s (training {train_seconds:.1f} s)")
    return summary


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
