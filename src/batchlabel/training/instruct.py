"""train.method instruct: LoRA on a causal LM to answer the `score` method's prompt with the gold label.

Each example is exactly what `score` later computes the log-probability of: the prompt built by
``PromptBuilder.single(text, [], "label")`` rendered with the model's chat template (article clipped to
``train.max_length`` tokens like the engine clips it), followed by the label as the whole assistant answer.
The loss covers only the answer tokens. The adapter is merged into the base weights and saved as a plain
HF causal-LM directory, so a `score` (or `prompt`) job uses it with ``engine.model: <train.output>``
on the hf or vllm engine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from batchlabel.encoders import resolve_encoder
from batchlabel.errors import BatchlabelError
from batchlabel.spec import JobSpec, ScoreMethod
from batchlabel.storage import StorageSettings
from batchlabel.training.artifacts import publish
from batchlabel.training.curves import curves_png
from batchlabel.training.data import Rows, load_training_data


def _examples(rows: Rows, chat, builder, labels: list[str], max_article_tokens: int) -> list[dict]:
    clipped, _ = chat.clip(rows.texts, max_article_tokens)
    out = []
    for text, label in zip(clipped, rows.labels):
        prompt = chat.prompt_ids(builder.single(text, [], "label"))
        answer = chat.continuation_ids(labels[label])
        out.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return out


def _collator(pad_id: int, side: str):
    import torch

    def collate(features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            span = slice(width - n, width) if side == "left" else slice(0, n)
            ids[row, span] = torch.tensor(feature["input_ids"])
            labels[row, span] = torch.tensor(feature["labels"])
            mask[row, span] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


def fit_instruct(spec: JobSpec, progress: bool = True) -> dict[str, Any]:
    """Train, merge and publish; returns the same summary dict as ``seqcls.fit``."""
    from rich.console import Console

    from batchlabel.engines.base import ChatTokenizer
    from batchlabel.prompts import PromptBuilder
    from batchlabel.training.seqcls import _resume_point, checkpoint_dir, training_arguments

    train = spec.train
    assert train is not None
    if not isinstance(spec.method, ScoreMethod):
        raise BatchlabelError("train.method 'instruct' trains a model for the score method: set method.name: score.")
    console = Console(stderr=True, quiet=not progress)
    started = time.monotonic()
    storage = StorageSettings.from_spec(spec.storage)
    data = load_training_data(spec, train, storage)
    console.print(
        f"instruction-tuning (LoRA, causal LM) {train.base_model} on {len(data.train)} rows, "
        f"{len(data.validation)} held out ({data.skipped} skipped)"
    )
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, EarlyStoppingCallback, Trainer, set_seed
    from transformers.trainer_callback import PrinterCallback

    set_seed(train.seed)
    base_dir = resolve_encoder(train.base_model or "", storage)
    chat = ChatTokenizer(base_dir)
    tokenizer = chat.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise BatchlabelError(f"The tokenizer of {train.base_model} has neither a pad nor an EOS token.")
    builder = PromptBuilder(spec.labels, spec.method.instructions)
    train_rows = _examples(data.train, chat, builder, spec.label_names, train.max_length)
    val_rows = _examples(data.validation, chat, builder, spec.label_names, train.max_length)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=train.lora.r, lora_alpha=train.lora.alpha,
        lora_dropout=train.lora.dropout, target_modules=train.lora.target_modules,
    )
    model = get_peft_model(model, config)
    directory = checkpoint_dir(train)
    resume = _resume_point(train, directory)
    if resume is None and directory.exists() and os.environ.get("RANK", "0") == "0":
        shutil.rmtree(directory)
    has_validation = len(val_rows) > 0
    args = training_arguments(train, directory, has_validation, progress)
    args.metric_for_best_model = "eval_loss"
    callbacks = []
    if has_validation and train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train.early_stopping_patience))
    trainer = Trainer(
        model=model, args=args, train_dataset=train_rows, eval_dataset=val_rows or None,
        data_collator=_collator(pad_id, train.padding_side), callbacks=callbacks,
    )
    if not progress:
        trainer.remove_callback(PrinterCallback)
    output = trainer.train(resume_from_checkpoint=resume)
    validation: dict = {}
    if has_validation:
        metrics = trainer.evaluate()
        validation = {"rows": len(val_rows), "loss": float(metrics["eval_loss"])}
    summary = {"rows": len(data.train), "skipped": data.skipped, "validation": validation, "step": trainer.state.global_step}
    if not trainer.is_world_process_zero():
        return summary
    marker = {
        "kind": "instruct",
        "labels": spec.label_names,
        "base_model": train.base_model,
        "max_length": train.max_length,
        "train": train.model_dump(mode="json", exclude={"input", "output", "inline", "c", "max_iter"}),
        "train_input": train.input.path,
        "train_rows": len(data.train),
        "validation_rows": len(data.validation),
        "global_step": trainer.state.global_step,
        "resumed_from": resume,
        "training_loss": output.training_loss,
        "validation": validation,
        "world_size": trainer.args.world_size,
        "use_with": "method score (or prompt) with engine.model set to this directory",
    }
    merged = trainer.model.merge_and_unload()
    with tempfile.TemporaryDirectory(prefix="batchlabel-train-") as staging:
        local = Path(staging)
        merged.save_pretrained(str(local))
        tokenizer.save_pretrained(str(local))
        (local / "training_log.json").write_text(json.dumps(trainer.state.log_history, indent=2))
        (local / "training_curves.png").write_bytes(curves_png(trainer.state.log_history))
        publish(local, train.output, storage, marker)
    console.print(f"merged instruction-tuned model written to {train.output} in {time.monotonic() - started:.1f} s")
    return summary
