"""cluster.yaml: valid for Ray's own cluster launcher (schema + checks, no cloud calls), and safe."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_ray_validates_the_cluster_config(raw):
    config = prepare_config(copy.deepcopy(raw))  # merges Ray's AWS defaults, as `ray up` does
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] == "head"


def test_ray_validation_is_not_a_rubber_stamp(raw):
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_worker"]["min_wokers"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
    broken = copy.deepcopy(raw)
    broken["head_node_type"] = "nope"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))


def test_cpu_head_and_autoscaling_gpu_workers(raw):
    nodes = raw["available_node_types"]
    head = nodes[raw["head_node_type"]]["node_config"]
    assert not head["InstanceType"].startswith(("g", "p"))  # CPU head
    workers = [n for name, n in nodes.items() if name != raw["head_node_type"]]
    assert len(workers) == 1
    worker = workers[0]
    assert worker["node_config"]["InstanceType"].startswith(("g5.", "g6.", "p4", "p5"))
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1  # scales from zero
    assert worker["node_config"]["IamInstanceProfile"]["Name"]  # S3 through an instance role


def test_setup_installs_batchlabel_with_the_vllm_extra(raw):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    worker_setup = " ".join(raw["worker_setup_commands"])
    match = re.search(r"batchlabel\[([a-z0-9,-]+)\]", worker_setup)
    assert match, worker_setup
    wanted = match.group(1).split(",")
    assert "vllm-gpu" in wanted and all(extra in extras for extra in wanted)
    assert any(dep.startswith("vllm==") for dep in extras["vllm-gpu"])
    assert "batchlabel" in " ".join(raw["head_setup_commands"])
    ray_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("ray["))
    version = ray_pin.split("==")[1]
    assert raw["docker"]["head_image"].endswith(f":{version}-py311-cpu")
    assert raw["docker"]["worker_image"].endswith(f":{version}-py311-gpu")


def test_no_secrets_in_the_file():
    text = (REPO / "cluster.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"(?i)(aws_secret_access_key|aws_session_token|secret_key)\s*[:=]", text)
    assert "ssh_private_key" not in text
