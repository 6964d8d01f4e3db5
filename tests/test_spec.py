"""Job spec validation: good specs, bad specs with clear messages, --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from batchlabel.config import JobSpec, load_job, parse_job
from batchlabel.config.overrides import apply_overrides
from batchlabel.errors import SpecError

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {
    "input": {"path": "data/reuters_r8/test.parquet"},
    "labels": ["a", "b"],
    "method": {"name": "embed", "head": "out/head"},
    "output": {"path": "out/x"},
}


def test_every_shipped_job_validates():
    jobs = sorted((REPO / "jobs").glob("*.yaml"))
    assert jobs, "no shipped jobs"
    for path in jobs:
        spec = load_job(path)
        assert isinstance(spec, JobSpec)
        assert spec.label_names


def test_minimal_spec_defaults():
    spec = parse_job(MINIMAL)
    assert spec.runtime.actors == 1 and spec.runtime.batch_size == 64
    assert spec.input.id_column == "id" and spec.input.text_column == "text"
    assert spec.labels[0].name == "a" and spec.labels[0].aliases == []
    assert spec.head_path() == "out/head"


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"outptu": {"path": "x"}}, "outptu: unknown field"),
        ({"runtime": {"actors": "many"}}, "runtime.actors"),
        ({"runtime": {"batch_size": 0}}, "runtime.batch_size"),
        ({"labels": ["a"]}, "labels"),
        ({"labels": ["a", "A "]}, "appears twice"),
        ({"labels": [{"name": "a", "aliases": ["b"]}, "b"]}, "appears twice"),
        ({"method": {"name": "nope"}}, "method"),
        ({"method": {"name": "embed", "head": "h", "colour": 1}}, "method.embed.colour: unknown field"),
        ({"input": {"path": "x", "format": "xlsx"}}, "input.format"),
        ({"input": {"path": "x", "passthrough": ["label"]}}, "clashes with an output column"),
    ],
)
def test_bad_specs_name_the_field(patch, expected):
    data = {**MINIMAL, **patch}
    with pytest.raises(SpecError) as info:
        parse_job(data, source="job.yaml")
    message = str(info.value)
    assert expected in message
    assert message.startswith("Invalid job spec job.yaml")
    assert "Traceback" not in message


def test_missing_required_field():
    data = {k: v for k, v in MINIMAL.items() if k != "output"}
    with pytest.raises(SpecError, match="output: required field is missing"):
        parse_job(data)


def test_embed_without_head_or_train_is_refused():
    data = {**MINIMAL, "method": {"name": "embed"}}
    with pytest.raises(SpecError, match="method.head is required"):
        parse_job(data)


def test_invalid_yaml_reports_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("input:\n  path: [unclosed\nlabels: a\n")
    with pytest.raises(SpecError, match=r"not valid YAML at line \d+"):
        load_job(path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_job(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("input: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_job(path)


def test_overrides_set_nested_fields_with_yaml_types(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    spec = load_job(
        path,
        ["output.path=s3://bucket/run1", "runtime.actors=3", "runtime.cpus_per_actor=0.5", "input.passthrough=[a, b]",
         "storage.endpoint_url=http://127.0.0.1:9000"],
    )
    assert spec.output.path == "s3://bucket/run1"
    assert spec.runtime.actors == 3 and spec.runtime.cpus_per_actor == 0.5
    assert spec.input.passthrough == ["a", "b"]
    assert spec.storage.endpoint_url == "http://127.0.0.1:9000"


def test_override_errors():
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        apply_overrides({}, ["output.path"])
    with pytest.raises(SpecError, match="not a section"):
        apply_overrides({"output": "x"}, ["output.path.deep=1"])
    with pytest.raises(SpecError, match="runtime.actors"):
        parse_job(apply_overrides(dict(MINIMAL), ["runtime.actors=-1"]))


def test_result_hash_ignores_runtime_but_not_labels():
    base = parse_job(MINIMAL)
    assert base.result_hash() == parse_job({**MINIMAL, "runtime": {"actors": 4, "batch_size": 8}}).result_hash()
    assert base.result_hash() != parse_job({**MINIMAL, "labels": ["a", "c"]}).result_hash()


def test_result_hash_ignores_speed_only_method_fields():
    """A resumed run may change batch sizes or concurrency (SPEED_ONLY), not what decides the labels."""
    base = parse_job(MINIMAL)
    faster = parse_job({**MINIMAL, "method": {**MINIMAL["method"], "encode_batch_size": 32}})
    assert base.result_hash() == faster.result_hash()
    assert base.result_hash() != parse_job({**MINIMAL, "method": {**MINIMAL["method"], "max_length": 64}}).result_hash()
    engine = {"name": "vllm", "model": "models/smollm2-135m"}
    prompt = {**MINIMAL, "method": {"name": "prompt", "engine": engine}}
    tuned = {**MINIMAL, "method": {"name": "prompt", "engine": {**engine, "prefix_caching": False,
                                                               "gpu_memory_utilization": 0.5}}}
    assert parse_job(prompt).result_hash() == parse_job(tuned).result_hash()
    other_model = {**MINIMAL, "method": {"name": "prompt", "engine": {**engine, "model": "models/gemma3-270m"}}}
    assert parse_job(prompt).result_hash() != parse_job(other_model).result_hash()
