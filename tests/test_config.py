"""The spec split by concern: discriminated engines and trainers refuse fields they do not use, and one
outcome hash (SPEED_ONLY fields excluded) decides what a result depends on."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchlabel.config import HeadTrain, HFEngineSpec, JobSpec, LoraTrain, OpenAIEngineSpec, load_job, parse_job
from batchlabel.config.base import SPEED_ONLY, StrictModel, is_speed_only
from batchlabel.config.nightly import load_pipeline
from batchlabel.errors import SpecError

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "input": {"path": "data/reuters_r8/test.parquet"},
    "labels": ["a", "b"],
    "output": {"path": "out/x"},
}


def prompt_job(**engine) -> dict:
    return {**BASE, "method": {"name": "prompt", "engine": engine}}


@pytest.mark.parametrize("path", sorted((REPO / "jobs").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_job_loads(path):
    spec = load_job(path)
    assert isinstance(spec, JobSpec) and len(spec.label_names) >= 2
    assert len(spec.result_hash()) == 16


def test_every_job_the_docs_name_exists_and_loads():
    """A job file named in the README or docs/ (e.g. after a rename) exists and validates."""
    import re

    texts = [(REPO / "README.md").read_text()] + [p.read_text() for p in (REPO / "docs").glob("*.md")]
    names = sorted({m for text in texts for m in re.findall(r"\bjobs/[\w.-]+\.yaml", text)})
    assert "jobs/reuters_embed.yaml" in names and "jobs/reuters_cascade_qwen.yaml" in names
    assert "jobs/news_prompt_gpu.yaml" in names  # the GPU news template is documented (README, cluster docs)
    for name in names:
        assert isinstance(load_job(REPO / name), JobSpec), name


@pytest.mark.parametrize("path", sorted((REPO / "pipelines").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_pipeline_loads(path):
    pipeline, job, raw = load_pipeline(path)
    assert pipeline.name and isinstance(job, JobSpec) and isinstance(raw, dict)


@pytest.mark.parametrize(
    "engine, path",
    [
        ({"name": "hf", "model": "m", "base_url": "http://x"}, "method.prompt.engine.hf.base_url: unknown field"),
        ({"name": "hf", "model": "m", "prefix_caching": False}, "method.prompt.engine.hf.prefix_caching: unknown field"),
        ({"name": "vllm", "model": "m", "batch_size": 4}, "method.prompt.engine.vllm.batch_size: unknown field"),
        ({"name": "openai", "model": "m", "base_url": "u", "dtype": "float32"}, "method.prompt.engine.openai.dtype: unknown field"),
        ({"name": "openai", "model": "m"}, "method.prompt.engine.openai.base_url: required field is missing"),
        ({"name": "together", "model": "m", "max_model_len": 512}, "method.prompt.engine.together.max_model_len: unknown field"),
        ({"name": "llama.cpp", "model": "m"}, "method.prompt.engine: Input tag 'llama.cpp'"),
    ],
)
def test_a_field_the_engine_does_not_use_is_refused_with_its_path(engine, path):
    with pytest.raises(SpecError) as caught:
        parse_job(prompt_job(**engine))
    assert path in str(caught.value)


def test_each_engine_gets_its_own_spec_class():
    assert isinstance(parse_job(prompt_job(name="hf", model="m")).method.engine, HFEngineSpec)
    openai = parse_job(prompt_job(name="openai", model="m", base_url="http://127.0.0.1:8000/v1")).method.engine
    assert isinstance(openai, OpenAIEngineSpec) and openai.api_key_env == "OPENAI_API_KEY"
    with pytest.raises(SpecError, match="needs prompt log-probabilities"):
        parse_job({**BASE, "method": {"name": "score", "engine": {"name": "openai", "model": "m", "base_url": "u"}}})


def _train(**fields) -> dict:
    return {
        **BASE,
        "method": {"name": "classifier"},
        "train": {"input": {"path": "data/reuters_r8/train.parquet", "gold_column": "label"}, "output": "out/m", **fields},
    }


def test_a_field_the_trainer_does_not_use_is_refused_with_its_path():
    with pytest.raises(SpecError, match=r"train\.full\.lora: unknown field"):
        parse_job(_train(method="full", base_model="b", lora={"r": 8}))
    with pytest.raises(SpecError, match=r"train\.instruct\.lora\.qlora: unknown field"):
        parse_job({**_train(method="instruct", base_model="b", lora={"qlora": True}), "method": {"name": "score", "engine": {"name": "hf", "model": "m"}}})
    head = {**_train(method="head", epochs=3), "method": {"name": "embed"}}
    with pytest.raises(SpecError, match=r"train\.head\.epochs: unknown field"):
        parse_job(head)
    assert isinstance(parse_job(_train(method="lora", base_model="b", lora={"qlora": False})).train, LoraTrain)


def test_train_method_defaults_to_head():
    spec = parse_job({**_train(), "method": {"name": "embed"}})
    assert isinstance(spec.train, HeadTrain) and spec.train.eval_fraction == 0.1


def test_outcome_hash_leaves_out_exactly_the_speed_only_fields():
    base = parse_job(prompt_job(name="openai", model="m", base_url="http://h/v1"))
    faster = parse_job(prompt_job(name="openai", model="m", base_url="http://h/v1", concurrency=64, timeout_s=5,
                                  request_retries=9, api_key_env="OTHER_KEY"))
    assert base.method.engine.outcome_hash() == faster.method.engine.outcome_hash()
    assert base.method.outcome_hash() == faster.method.outcome_hash()
    assert base.result_hash() == faster.result_hash()
    other = parse_job(prompt_job(name="openai", model="other", base_url="http://h/v1"))
    assert base.method.engine.outcome_hash() != other.method.engine.outcome_hash()
    assert base.result_hash() != other.result_hash()
    assert "concurrency" not in base.method.engine.outcome() and "model" in base.method.engine.outcome()


def test_every_speed_only_field_is_marked_next_to_its_declaration():
    """The one list of what cannot change a result is the set of marked fields."""
    marked = {
        f"{model.__name__}.{name}"
        for model in _all_spec_models()
        for name, info in model.model_fields.items()
        if is_speed_only(info)
    }
    assert "HFEngineSpec.batch_size" in marked and "VLLMEngineSpec.prefix_caching" in marked
    assert "OpenAIEngineSpec.api_key_env" in marked and "EmbedMethod.encode_batch_size" in marked
    assert not any(name.endswith((".model", ".labels", ".max_article_tokens")) for name in marked)
    assert SPEED_ONLY == {"speed_only": True}


def _all_spec_models() -> set[type]:
    import batchlabel.config as config
    from batchlabel.config.nightly import PipelineSpec

    seen: set[type] = set()
    todo = [JobSpec, PipelineSpec]
    for name in dir(config):
        value = getattr(config, name)
        if isinstance(value, type) and issubclass(value, StrictModel):
            todo.append(value)
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for info in model.model_fields.values():
            for arg in _types_in(info.annotation):
                if isinstance(arg, type) and issubclass(arg, StrictModel):
                    todo.append(arg)
    return seen


def _types_in(annotation) -> list:
    import typing

    args = typing.get_args(annotation)
    return [annotation] + [t for arg in args for t in _types_in(arg)]


def test_every_spec_field_is_described():
    missing = [f"{m.__name__}.{n}" for m in _all_spec_models() for n, info in m.model_fields.items() if not info.description]
    assert missing == []
