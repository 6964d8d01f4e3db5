"""HF-Trainer plumbing shared by the fine-tune trainers (``seqcls``: lora | full; ``instruct``).

A trainer module supplies ``fit(spec_json, progress) -> summary dict`` (load data with ``start_fit``, build
its model and examples, ``run_trainer``, evaluate, ``publish_run`` on rank 0) and an entry point that calls
``train_finetuned`` with that ``fit``: in this process for runtime.workers 1, in each Ray Train worker
otherwise (``training.distributed``). Checkpoints go to a local directory; resume picks up the last one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from batchlabel.config import JobSpec, LoraTrain
from batchlabel.config.train import TRAINS_FOR, FineTuneTrain
from batchlabel.errors import BatchlabelError
from batchlabel.io.storage import StorageSettings, is_remote
from batchlabel.models.classifier_artifact import publish
from batchlabel.training.curves import curves_png
from batchlabel.training.data import TrainingData, load_training_data
from batchlabel.training.result import TrainResult

if TYPE_CHECKING:
    from batchlabel.config import FullTrain, InstructTrain

    FineTune = LoraTrain | FullTrain | InstructTrain

#: what a fine-tune ``fit`` returns (rank 0's comes back from Ray Train workers)
Summary = dict[str, Any]


def checkpoint_dir(train: "FineTune") -> Path:
    """Local directory holding the Trainer's checkpoints (s3:// outputs get a local cache directory)."""
    if train.checkpoint_dir:
        if is_remote(train.checkpoint_dir):
            raise BatchlabelError("train.checkpoint_dir must be a local directory (checkpoints are not written to S3).")
        return Path(train.checkpoint_dir).expanduser()
    if is_remote(train.output):
        root = Path(os.environ.get("BATCHLABEL_CACHE", Path.home() / ".cache" / "batchlabel"))
        return root / "checkpoints" / hashlib.sha256(train.output.encode()).hexdigest()[:16]
    return Path(train.output.rstrip("/") + ".checkpoints").expanduser()


def uses_qlora(train: "FineTune") -> bool:
    """Whether the base model is loaded in 4 bits (only a LoRA sequence classifier can ask for it)."""
    return isinstance(train, LoraTrain) and train.lora.qlora


def check_device(train: "FineTune") -> None:
    """QLoRA needs a CUDA GPU and bitsandbytes; say so before anything is loaded."""
    if not uses_qlora(train):
        return
    import torch

    if not torch.cuda.is_available():
        raise BatchlabelError(
            "train.lora.qlora loads the base model in 4 bits with bitsandbytes, which needs a CUDA GPU; this "
            "machine has none. Set train.lora.qlora: false to train a plain (fp32) LoRA adapter on CPU."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise BatchlabelError("train.lora.qlora needs the bitsandbytes package (pip install bitsandbytes).") from None


def last_checkpoint(directory: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(directory)) if directory.is_dir() else None


def resume_point(train: "FineTune", directory: Path) -> str | None:
    """The checkpoint to resume from: train.resume_from_checkpoint's path, or the last one when true."""
    if isinstance(train.resume_from_checkpoint, str):
        if not Path(train.resume_from_checkpoint).is_dir():
            raise BatchlabelError(f"train.resume_from_checkpoint {train.resume_from_checkpoint} is not a directory.")
        return train.resume_from_checkpoint
    if train.resume_from_checkpoint:
        return last_checkpoint(directory)
    return None


def training_arguments(train: "FineTune", directory: Path, has_validation: bool, progress: bool):
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


def train_finetuned(spec: JobSpec, progress: bool, fit: Callable[[str, bool], Summary]) -> TrainResult:
    """Run ``fit`` here (runtime.workers 1) or in each of runtime.workers Ray Train workers (data parallel,
    DDP over gloo on CPU / NCCL on GPU; rank 0 evaluates and writes the artifact)."""
    train = spec.train
    if not isinstance(train, FineTuneTrain):
        raise BatchlabelError("This trainer needs train.method lora, full or instruct.")
    wants = TRAINS_FOR[train.method]
    if spec.method.name != wants:
        raise BatchlabelError(f"train.method {train.method!r} needs method {wants!r}, not {spec.method.name!r}.")
    started = time.monotonic()
    check_device(train)
    if spec.runtime.workers > 1:
        from batchlabel.training.distributed import fit_with_ray_train

        ray_dir = Path(str(checkpoint_dir(train)).rstrip("/") + ".ray").absolute()
        summary = fit_with_ray_train(spec, progress, f"{fit.__module__}:{fit.__name__}", ray_dir)
    else:
        summary = fit(spec.model_dump_json(), progress)
    wall = time.monotonic() - started
    return TrainResult(train.output, summary["rows"], summary["skipped"], summary["validation"], wall)


@dataclass
class FitContext:
    """What a ``fit`` works with: the spec, its train section, storage, the rows, a console."""

    spec: JobSpec
    train: "FineTune"
    storage: StorageSettings
    data: TrainingData
    console: Any
    started: float


def start_fit(spec_json: str, progress: bool) -> FitContext:
    """Parse the spec, load the rows (at least one to train on), seed the HF libraries."""
    from rich.console import Console

    started = time.monotonic()
    spec = JobSpec.model_validate_json(spec_json)
    train = spec.train
    assert isinstance(train, FineTuneTrain)
    storage = StorageSettings.from_spec(spec.storage)
    data = load_training_data(spec, train, storage)
    if len(data.train) == 0:
        raise BatchlabelError(
            f"No usable training rows in {train.input.path}: all {len(data.rows)} fall in the validation share "
            f"(train.eval_fraction {train.eval_fraction})."
        )
    from transformers import set_seed
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    set_seed(train.seed)
    return FitContext(spec, train, storage, data, Console(stderr=True, quiet=not progress), started)


@dataclass
class TrainerRun:
    trainer: Any  # transformers.Trainer, after train()
    output: Any  # its TrainOutput
    resume: str | None  # the checkpoint it resumed from
    train_seconds: float

    @property
    def step(self) -> int:
        return self.trainer.state.global_step


def run_trainer(
    ctx: FitContext, model, train_rows: list[dict], val_rows: list[dict], collator, progress: bool, compute_metrics=None
) -> TrainerRun:
    """Train with checkpoints in ``checkpoint_dir``, best-by-validation-loss and early stopping, resuming
    from ``resume_point``; stale checkpoints of an earlier run are removed first."""
    from transformers import EarlyStoppingCallback, Trainer
    from transformers.trainer_callback import PrinterCallback

    train, console = ctx.train, ctx.console
    has_validation = len(val_rows) > 0
    directory = checkpoint_dir(train)
    resume = resume_point(train, directory)
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
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    if not progress:
        trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
    if resume:
        console.print(f"resuming from {resume}")
    output = trainer.train(resume_from_checkpoint=resume)
    return TrainerRun(trainer, output, resume, time.monotonic() - ctx.started)


def summary(ctx: FitContext, run: TrainerRun, validation: dict) -> Summary:
    return {"rows": len(ctx.data.train), "skipped": ctx.data.skipped, "validation": validation, "step": run.step}


def artifact_marker(ctx: FitContext, run: TrainerRun, validation: dict, **fields: Any) -> dict[str, Any]:
    """The marker fields every fine-tuned artifact has, plus the trainer's own ``fields`` (kind, ...)."""
    train = ctx.train
    return {
        "labels": ctx.spec.label_names,
        "max_length": train.max_length,
        "train": train.model_dump(mode="json", exclude={"input", "output", "inline"}),
        "train_input": train.input.path,
        "train_rows": len(ctx.data.train),
        "validation_rows": len(ctx.data.validation),
        "global_step": run.step,
        "resumed_from": run.resume,
        "training_loss": run.output.training_loss,
        "validation": validation,
        "world_size": run.trainer.args.world_size,
        **fields,
    }


def publish_run(ctx: FitContext, run: TrainerRun, model, tokenizer, marker: dict, report: dict | None = None) -> None:
    """Write model, tokenizer, training log + curves (and the validation report) to train.output, marker last."""
    log_history = run.trainer.state.log_history
    with tempfile.TemporaryDirectory(prefix="batchlabel-train-") as staging:
        local = Path(staging)
        model.save_pretrained(str(local))
        tokenizer.save_pretrained(str(local))
        (local / "training_log.json").write_text(json.dumps(log_history, indent=2))
        (local / "training_curves.png").write_bytes(curves_png(log_history))
        if report:
            from batchlabel.report.writers import write_report

            title = f"batchlabel validation report: {ctx.spec.name}"
            write_report(report, str(local / "eval"), StorageSettings(), title)
        publish(local, ctx.train.output, ctx.storage, marker)
