"""LLM labeling on the hf engine: structured parsing, prompts, few-shot, prompt (single and batched with
split-and-re-ask), score (full, first-token, calibration), and a real run through the Ray pipeline.

The model is a tiny random Llama (hidden 64, 2 heads) with SmolLM2's tokenizer and chat template, built
once per session: its labels are meaningless, the mechanics are real.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from batchlabel.config import JobSpec, LabelSpec, parse_job
from batchlabel.config.labels import LabelNormalizer
from batchlabel.methods.structured import batch_constraint, parse_batch, parse_single

from conftest import R8_LABELS

LABELS = [LabelSpec(name=n, aliases=["fx"] if n == "money-fx" else []) for n in R8_LABELS]


def tokenizer_source() -> str:
    """SmolLM2's tokenizer files: from the imported model dir if present, else converted from the GGUF."""
    from batchlabel.models.gguf import smollm2_gguf

    return str(smollm2_gguf())


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory) -> str:
    """A tiny random Llama saved with save_pretrained, with SmolLM2's tokenizer (vocab 49152)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = Path(__file__).resolve().parents[1]
    imported = root / "models" / "smollm2-135m"
    if (imported / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(imported)
    else:
        gguf = Path(tokenizer_source())
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_llm") / "llama"
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def llm_job(r8: dict, output: str, method: dict, **extra) -> dict:
    job = {
        "name": "r8-llm",
        "input": {"path": str(r8["test"]), "gold_column": "label", "limit": 12},
        "labels": R8_LABELS,
        "method": method,
        "runtime": {"actors": 1, "batch_size": 6, "threads_per_actor": 1},
        "output": {"path": output, "shard_rows": 6},
    }
    job.update(extra)
    return job


@pytest.fixture(scope="module")
def r8_texts(r8_small) -> list[str]:
    return pq.read_table(r8_small["test"]).column("text").to_pylist()[:8]


# ---------------------------------------------------------------- structured output (no model)


def test_single_answers_are_normalised_and_unknown_labels_are_errors():
    norm = LabelNormalizer(LABELS)
    assert parse_single("  Money-FX \n", norm, rationale=False, as_json=False) == ("money-fx", None)
    assert parse_single("fx", norm, rationale=False, as_json=False) == ("money-fx", None)
    label, reason = parse_single("sports", norm, rationale=False, as_json=False)
    assert label is None and "unknown label 'sports'" in reason
    assert parse_single('{"label": "EARN"}', norm, rationale=False, as_json=True) == ("earn", None)
    label, reason = parse_single('{"label": "weather"}', norm, rationale=False, as_json=True)
    assert label is None and "schema" in reason
    label, reason = parse_single('{"label": "earn"', norm, rationale=False, as_json=True)
    assert label is None and "invalid JSON" in reason


def test_batch_replies_are_checked_for_count_ids_and_labels():
    norm = LabelNormalizer(LABELS)
    ids = ["a1", "a2", "a3"]
    good = json.dumps({"results": [{"id": "a1", "label": "earn"}, {"id": "a2", "label": "Acq"}, {"id": "a3", "label": "ship"}]})
    parsed = parse_batch(good, norm, ids, rationale=False)
    assert parsed.group_error is None and parsed.labels == {"a1": "earn", "a2": "acq", "a3": "ship"}
    dropped = json.dumps({"results": [{"id": "a1", "label": "earn"}, {"id": "a3", "label": "ship"}]})
    assert "at least 3" in parse_batch(dropped, norm, ids, rationale=False).group_error
    duplicated = json.dumps({"results": [{"id": "a1", "label": "earn"}, {"id": "a1", "label": "acq"}, {"id": "a3", "label": "ship"}]})
    assert "missing ['a2']" in parse_batch(duplicated, norm, ids, rationale=False).group_error
    unknown = json.dumps({"results": [{"id": "a1", "label": "earn"}, {"id": "a2", "label": "golf"}, {"id": "a3", "label": "ship"}]})
    parsed = parse_batch(unknown, norm, ids, rationale=False)
    assert parsed.group_error is None and parsed.item_errors == {"a2": "unknown label 'golf'"}
    schema = json.loads(batch_constraint(norm, ids, rationale=False).json_schema)
    items = schema["properties"]["results"]["prefixItems"]
    assert [i["properties"]["id"]["const"] for i in items] == ids
    assert items[0]["properties"]["label"]["enum"] == R8_LABELS


def test_prompts_put_static_content_first_and_the_article_last():
    from batchlabel.methods.prompts import Example, PromptBuilder

    builder = PromptBuilder(LABELS, None)
    examples = [Example("profit up", "earn"), Example("bought a stake", "acq")]
    a = builder.single("first article", examples, "label")
    b = builder.single("second article", examples, "label")
    assert a[:-1] == b[:-1] and a[-1]["content"].endswith("first article")
    assert [m["role"] for m in a] == ["system", "user", "assistant", "user", "assistant", "user"]
    batch = builder.batch([("a1", "x"), ("a2", "y")], examples)
    assert batch[-1]["content"] == "[a1] x\n\n[a2] y" and json.loads(batch[2]["content"])["results"][1] == {"id": "e2", "label": "acq"}


def test_few_shot_strategies(r8_small):
    from batchlabel.config import FewShotSpec
    from batchlabel.io.storage import StorageSettings
    from batchlabel.methods.fewshot import FewShotSelector

    source = {"path": str(r8_small["train"]), "gold_column": "label", "id_column": "id"}
    storage = StorageSettings()
    strat = FewShotSelector(FewShotSpec(k=8, strategy="stratified", source=source), LABELS, storage)
    assert sorted(e.label for e in strat.fixed) == sorted(R8_LABELS)  # one per label
    rand1 = FewShotSelector(FewShotSpec(k=5, strategy="random", source=source, seed=3), LABELS, storage)
    rand2 = FewShotSelector(FewShotSpec(k=5, strategy="random", source=source, seed=3), LABELS, storage)
    assert rand1.fixed == rand2.fixed and len(rand1.fixed) == 5
    ids = pq.read_table(r8_small["train"]).column("id").to_pylist()[5:7]
    fixed = FewShotSelector(FewShotSpec(k=2, strategy="fixed", source=source, ids=[str(i) for i in ids]), LABELS, storage)
    assert [e.text for e in fixed.fixed] == pq.read_table(r8_small["train"]).column("text").to_pylist()[5:7]
    nearest = FewShotSelector(FewShotSpec(k=3, strategy="nearest", source=source), LABELS, storage)
    query = strat.examples[10].text
    picked = nearest.select([query])[0]
    assert len(picked) == 3 and picked[-1].text == query  # the most similar (itself) sits next to the article
    split = {**source, "split": {"part": "train", "fraction": 0.5}}
    half = FewShotSelector(FewShotSpec(k=3, strategy="random", source=split), LABELS, storage)
    assert 0 < len(half.examples) < len(strat.examples)


# ---------------------------------------------------------------- registries, missing extras, fingerprints (no model)


def job_with(method: dict) -> JobSpec:
    return parse_job({"input": {"path": "unused"}, "labels": R8_LABELS, "method": method, "output": {"path": "unused"}})


def test_unknown_names_list_the_valid_ones_and_custom_labelers_load_through_the_registry():
    from batchlabel.engines import engine_class
    from batchlabel.errors import BatchlabelError
    from batchlabel.methods import METHODS, labeler_class
    from batchlabel.testing.faults import FaultyLabeler

    with pytest.raises(BatchlabelError) as engine_error:
        engine_class("gpt")
    assert str(engine_error.value) == "Unknown engine 'gpt'; valid: hf, vllm, openai, together."
    with pytest.raises(BatchlabelError) as method_error:
        METHODS.load("vote")
    assert str(method_error.value) == "Unknown method 'vote'; valid: embed, prompt, score, classifier, cascade."
    custom = {"name": "custom", "labeler": "batchlabel.testing.faults:FaultyLabeler"}
    assert labeler_class(job_with(custom)) is FaultyLabeler
    with pytest.raises(BatchlabelError, match="Cannot load labeler batchlabel.testing.faults:Nope: .*no attribute 'Nope'"):
        labeler_class(job_with({**custom, "labeler": "batchlabel.testing.faults:Nope"}))


@pytest.mark.parametrize("engine, module", [("openai", "openai"), ("together", "langchain_together"), ("vllm", "vllm")])
def test_a_missing_engine_package_names_its_extra_in_the_driver_and_in_the_actor(monkeypatch, engine, module):
    from batchlabel.engines import build_engine
    from batchlabel.engines.vllm_engine import CPU_DEFAULTS
    from batchlabel.errors import BatchlabelError
    from batchlabel.io.storage import StorageSettings
    from batchlabel.methods import preflight_method

    monkeypatch.setitem(sys.modules, module, None)  # "not installed"
    for key, value in CPU_DEFAULTS.items():  # the vllm engine sets these before its import: undo after the test
        monkeypatch.setenv(key, os.environ.get(key, value))
    remote = {"base_url": "http://127.0.0.1:1/v1"} if engine != "vllm" else {}
    spec = job_with({"name": "prompt", "engine": {"name": engine, "model": "org/model", **remote}})
    extra = {"langchain_together": "together"}.get(module, module)
    message = f"The {engine} engine needs the .*: " + re.escape(f"pip install 'batchlabel[{extra}]'.")
    with pytest.raises(BatchlabelError, match=message):
        preflight_method(spec, StorageSettings())  # driver: checked without importing
    with pytest.raises(BatchlabelError, match=message):
        build_engine(spec.method.engine, StorageSettings())  # actor: the import itself


#: per engine, fields that change only speed (SPEED_ONLY) and fields that change results
SPEED_FIELDS = {
    "hf": {"batch_size": 3},
    "vllm": {"prefix_caching": False, "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5},
    "openai": {"api_key_env": "OTHER_KEY", "concurrency": 9, "timeout_s": 5.0, "request_retries": 0},
}
SPEED_FIELDS["together"] = SPEED_FIELDS["openai"]
RESULT_FIELDS = {"model": "org/other-model", "max_article_tokens": 99}


def assert_fingerprint_follows_the_outcome(engine: dict) -> None:
    from batchlabel.io.storage import StorageSettings
    from batchlabel.methods import labeler_fingerprint

    def fingerprint(engine_fields: dict, **method) -> str:
        spec = job_with({"name": "prompt", "engine": {**engine, **engine_fields}, **method})
        return labeler_fingerprint(spec, StorageSettings())  # driver-side: no model is loaded

    base = fingerprint({})
    for field, value in SPEED_FIELDS[engine["name"]].items():
        assert fingerprint({field: value}) == base, f"{field} is speed-only"
    for field, value in RESULT_FIELDS.items():
        assert fingerprint({field: value}) != base, f"{field} changes results"
    assert fingerprint({}, instructions="Be brief.") != base


@pytest.mark.parametrize("name", ["openai", "together"])
def test_remote_labeler_fingerprint_ignores_speed_only_fields(name):
    assert_fingerprint_follows_the_outcome({"name": name, "model": "served-model", "base_url": "http://127.0.0.1:1/v1"})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hf", "vllm"])
def test_local_labeler_fingerprint_ignores_speed_only_fields(tiny_llm, name):
    assert_fingerprint_follows_the_outcome({"name": name, "model": tiny_llm})


# ---------------------------------------------------------------- hf engine + labelers


def labeler(tiny_llm: str, method: dict, engine=None):
    from batchlabel.methods.prompt import PromptLabeler
    from batchlabel.methods.score import ScoreLabeler

    spec = parse_job({"input": {"path": "unused"}, "labels": [l.model_dump() for l in LABELS], "method": method,
                      "output": {"path": "unused"}})
    cls = PromptLabeler if method["name"] == "prompt" else ScoreLabeler
    return cls(spec, engine=engine) if engine is not None else cls(spec)


@pytest.mark.slow
def test_hf_score_matches_a_plain_forward_pass(tiny_llm, r8_texts):
    import torch

    from batchlabel.config import HFEngineSpec
    from batchlabel.engines.hf import HFEngine
    from batchlabel.io.storage import StorageSettings

    engine = HFEngine(HFEngineSpec(name="hf", model=tiny_llm, batch_size=3), StorageSettings())
    prompts = [[{"role": "user", "content": t[:300]}] for t in r8_texts[:4]]
    fast = engine.score_labels(prompts, R8_LABELS)  # prompt once, label continuations on its KV cache
    first = engine.score_labels(prompts, R8_LABELS, first_token=True)
    with torch.inference_mode():
        for i, messages in enumerate(prompts):
            ids = engine.chat.prompt_ids(messages)
            for j, label in enumerate(R8_LABELS):
                cont = engine.chat.continuation_ids(label)
                logp = torch.log_softmax(engine.model(torch.tensor([ids + cont])).logits[0].float(), -1)
                full = sum(logp[len(ids) - 1 + k, t].item() for k, t in enumerate(cont))
                assert fast[i, j] == pytest.approx(full, abs=1e-3)
                assert first[i, j] == pytest.approx(logp[len(ids) - 1, cont[0]].item(), abs=1e-3)


@pytest.mark.slow
def test_score_labeler_variants_and_calibration(tiny_llm, r8_texts):
    engine_spec = {"name": "hf", "model": tiny_llm, "max_article_tokens": 64}
    plain = labeler(tiny_llm, {"name": "score", "engine": engine_spec})
    out = plain.label(r8_texts)
    assert out.probs.shape == (8, 8) and np.allclose(out.probs.sum(1), 1.0, atol=1e-5)
    assert all(e is None for e in out.errors) and out.labels == [R8_LABELS[i] for i in out.probs.argmax(1)]
    assert any(out.truncated)  # articles are cut to 64 tokens
    calibrated = labeler(tiny_llm, {"name": "score", "engine": engine_spec, "calibrate": True}, engine=plain.engine)
    cal = calibrated.label(r8_texts)
    # contextual calibration divides by the content-free probabilities: p_cal ∝ p / p_cf
    expected = out.probs / np.exp(calibrated.calibration)
    assert np.allclose(cal.probs, expected / expected.sum(1, keepdims=True), atol=1e-5)
    assert calibrated.fingerprint != plain.fingerprint
    first = labeler(tiny_llm, {"name": "score", "engine": engine_spec, "variant": "first_token"}, engine=plain.engine)
    assert first.label(r8_texts).probs.shape == (8, 8)


@pytest.mark.slow
def test_prompt_single_is_constrained_and_confident(tiny_llm, r8_texts):
    lab = labeler(tiny_llm, {"name": "prompt", "engine": {"name": "hf", "model": tiny_llm, "max_article_tokens": 64}})
    out = lab.label(r8_texts[:4])
    assert all(label in R8_LABELS for label in out.labels) and all(e is None for e in out.errors)
    for row, label, conf in zip(out.probs, out.labels, out.confidence):
        assert 0 < conf <= 1 and row[R8_LABELS.index(label)] == pytest.approx(conf) and np.nansum(row) == pytest.approx(conf)
    assert lab.stats.prompts == 4 and lab.stats.prompt_tokens > 0


@pytest.mark.slow
def test_prompts_longer_than_the_context_are_error_rows(tiny_llm):
    from batchlabel.config import HFEngineSpec
    from batchlabel.engines.hf import HFEngine
    from batchlabel.io.storage import StorageSettings

    engine = HFEngine(HFEngineSpec(name="hf", model=tiny_llm, max_model_len=64), StorageSettings())
    prompts = [[{"role": "user", "content": "short"}], [{"role": "user", "content": "word " * 200}]]
    short, long = engine.generate(prompts, [None, None], max_tokens=8)
    assert short.error is None and long.output_tokens == 0
    assert long.error == f"prompt of {long.prompt_tokens} tokens exceeds max_model_len - max_tokens (56)"


class DroppingEngine:
    """Wraps a REAL engine and removes the entry of one article from every batched reply it returns."""

    def __init__(self, inner, drop_id: str):
        self.inner, self.drop_id = inner, drop_id
        self.formats, self.can_score = inner.formats, inner.can_score
        self.usage = inner.usage  # the real engine counts the tokens spent
        self.group_sizes: list[int] = []

    def clip(self, texts, max_tokens):
        return self.inner.clip(texts, max_tokens)

    def generate(self, prompts, constraints, max_tokens, temperature=0.0, seed=None):
        replies = self.inner.generate(prompts, constraints, max_tokens, temperature, seed)
        for reply in replies:
            value = json.loads(reply.text)
            self.group_sizes.append(len(value["results"]))
            value["results"] = [item for item in value["results"] if item["id"] != self.drop_id]
            reply.text = json.dumps(value)
        return replies

    def close(self):
        self.inner.close()


@pytest.mark.slow
def test_batched_prompt_splits_and_reasks_then_records_errors(tiny_llm, r8_texts):
    from batchlabel.config import HFEngineSpec
    from batchlabel.engines.hf import HFEngine
    from batchlabel.io.storage import StorageSettings

    real = HFEngine(HFEngineSpec(name="hf", model=tiny_llm, max_article_tokens=48), StorageSettings())
    wrapper = DroppingEngine(real, drop_id="a3")  # the third article's answer always goes missing
    method = {"name": "prompt", "engine": {"name": "hf", "model": tiny_llm, "max_article_tokens": 48},
              "items_per_prompt": 4, "max_retries": 2}
    lab = labeler(tiny_llm, method, engine=wrapper)
    out = lab.label(r8_texts[:6])
    # group [a1..a4] fails → [a1,a2] ok, [a3,a4] fails → [a3] fails (+2 re-asks), [a4] ok; [a5,a6] ok at once
    assert wrapper.group_sizes == [4, 2, 2, 2, 1, 1, 1, 1]
    assert out.labels[2] is None and "at least 1 item" in out.errors[2] and out.errors[2].endswith("(after 3 asks)")
    assert np.isnan(out.probs[2]).all()
    others = [i for i in range(6) if i != 2]
    assert all(out.labels[i] in R8_LABELS and out.errors[i] is None for i in others)
    assert lab.stats.splits == 2 and lab.stats.reasks == 2 and lab.stats.error_rows == 1
    # token accounting: every prompt's tokens are attributed to its articles
    assert sum(lab.stats.prompt_tokens_per_article) == pytest.approx(lab.stats.prompt_tokens)


@pytest.mark.slow
def test_unconstrained_garbage_becomes_error_rows(tiny_llm, r8_texts):
    method = {"name": "prompt", "engine": {"name": "hf", "model": tiny_llm, "max_article_tokens": 32},
              "constrained": False, "max_retries": 0, "max_new_tokens": 6}
    out = labeler(tiny_llm, method).label(r8_texts[:2])
    assert out.labels == [None, None] and all("unknown label" in e for e in out.errors)


# ---------------------------------------------------------------- through the real pipeline


@pytest.mark.slow
def test_run_job_prompt_and_score_hf_write_the_embed_schema(tiny_llm, r8_small, tmp_path, ray_cluster):
    import pyarrow.parquet as pq

    from batchlabel.io.sink import read_committed
    from batchlabel.io.storage import StorageSettings
    from batchlabel.run.actor import output_schema
    from batchlabel.run.pipeline import run_job

    from conftest import embed_job

    embed_spec = parse_job(embed_job(r8_small, str(tmp_path / "e"), str(tmp_path / "h")))
    few_shot = {"k": 2, "strategy": "stratified", "source": {"path": str(r8_small["train"]), "gold_column": "label"}}
    methods = {
        "prompt": {"name": "prompt", "engine": {"name": "hf", "model": tiny_llm, "max_article_tokens": 48},
                   "items_per_prompt": 3, "few_shot": few_shot},
        "score": {"name": "score", "engine": {"name": "hf", "model": tiny_llm, "max_article_tokens": 48},
                  "variant": "first_token", "calibrate": True},
    }
    for name, method in methods.items():
        output = str(tmp_path / name)
        spec = parse_job(llm_job(r8_small, output, method))
        result = run_job(spec, progress=False)
        table = read_committed(output, StorageSettings())
        assert table.num_rows == 12 and result.manifest["rows"] == 12
        assert table.select(output_schema(embed_spec).names).schema.equals(output_schema(embed_spec))
        assert pq.read_schema(sorted(Path(output).glob("part-*.parquet"))[0]).names == output_schema(spec).names
        assert (Path(output) / "report.json").is_file() and "accuracy" in result.report["metrics"]
        labels = table.column("label").to_pylist()
        assert all(label in R8_LABELS for label in labels), table.column("error").to_pylist()
