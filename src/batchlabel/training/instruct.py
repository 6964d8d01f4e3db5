"""train.method instruct: LoRA on a causal LM to answer the `score` method's prompt with the gold label.

Each example is exactly what `score` later computes the log-probability of: the prompt built by
``PromptBuilder.single(text, [], "label")`` rendered with the model's chat template (article clipped to
``train.max_length`` tokens like the engine clips it), followed by the label as the whole assistant answer.
The loss covers only the answer tokens. The adapter is merged into the base weights and saved as a plain
HF causal-LM directory, so a `score` (or `prompt`) job uses it with ``engine.model: <train.output>``
on the hf or vllm engine.
"""

from __future__ import annotations

import time

from batchlabel.config import InstructTrain, JobSpec, ScoreMethod
from batchlabel.errors import BatchlabelError
from batchlabel.models.encoders import resolve_encoder
from batchlabel.training import hf_trainer
from batchlabel.training.data import Rows
from batchlabel.training.result import TrainResult


def train_instruct(spec: JobSpec, progress: bool = True) -> TrainResult:
    """`batchlabel train` for train.method instruct (see ``hf_trainer.train_finetuned``)."""
    if not isinstance(spec.train, InstructTrain):
        raise BatchlabelError("train_instruct needs train.method instruct.")
    if not isinstance(spec.method, ScoreMethod):
        raise BatchlabelError("train.method 'instruct' trains a model for the score method: set method.name: score.")
    return hf_trainer.train_finetuned(spec, progress, fit)


def _examples(rows: Rows, chat, builder, labels: list[str], max_article_tokens: int) -> list[dict]:
    clipped, _ = chat.clip(rows.texts, max_article_tokens)
    out = []
    for text, label in zip(clipped, rows.labels):
        prompt = chat.prompt_ids(builder.single(text, [], "label"))
        answer = chat.continuation_ids(labels[label])
        out.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return out


def _collator(pad_id: int, side: str):
    """Pads input_ids with ``pad_id``, labels with -100 (no loss), on ``side``; builds the attention mask."""
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


def fit(spec_json: str, progress: bool = True) -> hf_trainer.Summary:
    """Train, merge and (on rank 0) publish; returns the same summary dict as ``seqcls.fit``."""
    from batchlabel.engines.base import ChatTokenizer
    from batchlabel.methods.prompts import PromptBuilder

    ctx = hf_trainer.start_fit(spec_json, progress)
    spec, train, data, console = ctx.spec, ctx.train, ctx.data, ctx.console
    assert isinstance(train, InstructTrain) and isinstance(spec.method, ScoreMethod)
    console.print(
        f"instruction-tuning (LoRA, causal LM) {train.base_model} on {len(data.train)} rows, "
        f"{len(data.validation)} held out ({data.skipped} skipped)"
    )
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = resolve_encoder(train.base_model or "", ctx.storage)
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
    run = hf_trainer.run_trainer(ctx, model, train_rows, val_rows, _collator(pad_id, train.padding_side), progress)
    validation: dict = {}
    if val_rows:
        metrics = run.trainer.evaluate()
        validation = {"rows": len(val_rows), "loss": float(metrics["eval_loss"])}
    result = hf_trainer.summary(ctx, run, validation)
    if not run.trainer.is_world_process_zero():
        return result
    marker = hf_trainer.artifact_marker(
        ctx, run, validation,
        kind="instruct",
        base_model=train.base_model,
        use_with="method score (or prompt) with engine.model set to this directory",
    )
    hf_trainer.publish_run(ctx, run, run.trainer.model.merge_and_unload(), tokenizer, marker)
    console.print(f"merged instruction-tuned model written to {train.output} in {time.monotonic() - ctx.started:.1f} s")
    return result
