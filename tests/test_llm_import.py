"""`batchlabel models import-gguf`: the PyPI GGUF becomes a plain HF directory with identical logits;
every shipped LLM job spec validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchlabel.config import load_job

ROOT = Path(__file__).resolve().parents[1]
LLM_JOBS = ["reuters_prompt_vllm", "reuters_score_hf", "tweets_fewshot_vllm", "reuters_prompt_openai",
            "reuters_prompt_qwen_vllm", "reuters_score_qwen_hf", "reuters_score_qwen_vllm", "tweets_prompt_qwen_vllm"]


@pytest.mark.parametrize("name", LLM_JOBS)
def test_shipped_llm_jobs_validate(name):
    spec = load_job(ROOT / "jobs" / f"{name}.yaml")
    assert spec.method.name in ("prompt", "score") and spec.method.engine.model


@pytest.mark.slow
def test_import_smollm2_gives_the_same_logits(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from batchlabel.models.gguf import import_model, smollm2_gguf

    pytest.importorskip("gguf")
    out = tmp_path / "smollm2-135m"
    info = import_model("smollm2-135m", out)
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file() and info["params"] > 100_000_000
    assert import_model("smollm2-135m", out)["skipped"]  # converted once, then reused
    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith("<|im_start|>")
    ids = tok("Oil prices rose on Monday", return_tensors="pt").input_ids
    with torch.inference_mode():
        converted = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
        original = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype="float32"
        ).eval()(ids).logits
    assert torch.allclose(converted, original, atol=1e-4)
