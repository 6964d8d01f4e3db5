"""`batchlabel schema`: every field of every spec model, compared with the Pydantic models themselves, and the
spec-error hint that points at it."""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest
from typer.testing import CliRunner

import batchlabel.config as config
from batchlabel.cli import app
from batchlabel.config import parse_job
from batchlabel.config.base import StrictModel
from batchlabel.config.nightly import load_pipeline
from batchlabel.errors import SpecError

BASE = {"input": {"path": "data/reuters_r8/test.parquet"}, "labels": ["a", "b"], "output": {"path": "out/x"}}


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result


def config_models() -> set[type]:
    """Every concrete StrictModel declared in batchlabel.config (all its modules imported), found by subclassing,
    not by the walk `schema` uses; the private bases (_EngineBase...) only lend their fields to these."""
    for module in pkgutil.iter_modules(config.__path__):
        importlib.import_module(f"batchlabel.config.{module.name}")

    def below(cls: type) -> set[type]:
        return {sub for direct in cls.__subclasses__() for sub in {direct} | below(direct)}

    models = {m for m in below(StrictModel) if m.__module__.startswith("batchlabel.config.")}
    return {m for m in models if not m.__name__.startswith("_")}


def schema_rows() -> list[dict]:
    result = cli("schema", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_schema_covers_every_field_of_every_config_model():
    rows = schema_rows()
    listed = {(row["model"], row["name"]) for row in rows}
    models = config_models()
    assert len(models) >= 25  # the walk below is not vacuous
    expected = {(m.__name__, name) for m in models for name in m.model_fields}
    assert expected - listed == set(), "fields missing from `batchlabel schema`"
    assert {model for model, _ in listed} == {m.__name__ for m in models}  # nothing listed that is not a model


def test_each_row_says_what_the_model_says():
    by_model = {m.__name__: m for m in config_models()}
    for row in schema_rows():
        info = by_model[row["model"]].model_fields[row["name"]]
        assert row["description"] == info.description and row["description"], row["path"]
        assert row["required"] == info.is_required(), row["path"]
        if not info.is_required():
            default = info.get_default(call_default_factory=True)
            if not hasattr(default, "model_fields"):
                assert json.loads(row["default"]) == json.loads(json.dumps(default)), row["path"]
        assert row["path"].endswith(row["name"]) and row["type"], row["path"]


def test_the_text_listing_has_one_line_per_field_with_type_default_and_description():
    result = cli("schema")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for row in schema_rows():
        line = next((x for x in lines if x.startswith(row["path"] + " (")), None)
        assert line is not None, row["path"]
        assert row["type"] in line and row["description"] in line
        assert ("required" in line) if row["required"] else (f"default {row['default']}" in line)
    assert "runtime.actors (int, >=1, default 1): Labeling actors" in result.stdout
    assert "method.prompt.engine (one of hf|vllm|openai|together (by name), required)" in result.stdout
    assert "# pipeline (PipelineSpec)" in result.stdout and "pipeline.drift.max_label_shift (" in result.stdout


@pytest.mark.parametrize(
    "section, present, absent",
    [
        ("method.prompt.engine.vllm", ["method.prompt.engine.vllm.gpu_memory_utilization ("], ["input.path (", "method.prompt.engine.hf.model ("]),
        ("runtime", ["runtime.stall_timeout_s ("], ["input.path ("]),
        ("train.lora", ["train.lora.lora.qlora (", "train.lora.learning_rate ("], ["train.full."]),
        ("method.cascade.stages[1].method.embed", ["method.embed.backend ("], ["method.prompt."]),
        ("labels[0]", ["labels[].aliases ("], ["input."]),
        ("pipeline", ["pipeline.schedule.cron (", "pipeline.gold (", "Fields: see input."], ["method.embed."]),
    ],
)
def test_a_section_prints_that_section(section, present, absent):
    result = cli("schema", section)
    assert result.exit_code == 0, result.output
    for text in present:
        assert text in result.stdout, text
    for text in absent:
        assert text not in result.stdout, text


def test_a_field_prints_its_line_and_a_wrong_path_names_the_choices():
    one = cli("schema", "runtime.actors")
    assert one.exit_code == 0 and one.stdout.strip().startswith("runtime.actors (int, >=1, default 1)")
    wrong = cli("schema", "method.prompt.engine.llama")
    assert wrong.exit_code == 2
    assert "has no field or section 'llama' (it has: hf, openai, together, vllm)" in wrong.stderr


@pytest.mark.parametrize(
    "job, section",
    [
        ({**BASE, "method": {"name": "prompt", "engine": {"name": "hf", "model": "m", "base_url": "u"}}}, "method.prompt.engine.hf"),
        ({**BASE, "method": {"name": "embed", "head": "h"}, "runtime": {"actorz": 2}}, "runtime"),
        ({**BASE, "method": {"name": "embed", "head": "h"}, "outptu": {}}, "job"),
        ({**BASE, "labels": ["a", {"name": "b", "colour": "red"}], "method": {"name": "embed", "head": "h"}}, "labels[1]"),
    ],
)
def test_an_unknown_field_error_points_at_the_schema_section_that_lists_the_fields(job, section):
    with pytest.raises(SpecError) as caught:
        parse_job(job, source="job.yaml")
    message = str(caught.value)
    assert f"`batchlabel schema {section}` lists the fields" in message
    assert "run --help" not in message and "the README" not in message
    listed = cli("schema", section)  # the command the hint names works and lists fields
    assert listed.exit_code == 0 and listed.stdout.count("(") > 2


def test_a_pipeline_error_points_at_the_pipeline_section(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\njob: ../x.yaml\noutput: out/p\ndrift: {max_acuracy_drop: 0.1}\n")
    with pytest.raises(SpecError, match=r"`batchlabel schema pipeline\.drift` lists the fields"):
        load_pipeline(path)
    assert cli("schema", "pipeline.drift").exit_code == 0
