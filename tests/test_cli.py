"""The `batchlabel` command as users run it: subprocesses, their own local Ray, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, embed_job

BATCHLABEL = [sys.executable, "-m", "batchlabel.cli"]


def run_cli(*args: str, cwd: Path = REPO, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TERM": "dumb"}
    return subprocess.run([*BATCHLABEL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def write_job(path: Path, job: dict) -> Path:
    path.write_text(yaml.safe_dump(job))
    return path


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ["run", "train", "eval"]:
        assert command in result.stdout


def test_cli_starts_without_heavy_imports():
    code = "import sys, batchlabel.cli; print(sorted(m for m in ('torch','ray','vllm','transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_dry_run_prints_plan_and_labels_nothing(r8_small, tmp_path):
    job = write_job(tmp_path / "job.yaml", embed_job(r8_small, str(tmp_path / "out"), str(tmp_path / "head")))
    result = run_cli("run", str(job), "--dry-run", "--set", "runtime.actors=2")
    assert result.returncode == 0, result.stderr
    assert '"actors": 2' in result.stdout and "nothing was labeled" in result.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "head").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ("input: {path: x}\nlabels: [a, b]\nmethod: {name: embed, head: h}\noutput: {path: o}\nruntime: {actors: two}\n", "runtime.actors"),
        ("input: [\n", "not valid YAML"),
        ("input: {path: nowhere.parquet}\nlabels: [a, b]\nmethod: {name: embed, head: h}\noutput: {path: o}\n", "does not exist"),
    ],
)
def test_bad_job_is_one_paragraph_without_traceback(tmp_path, content, message):
    job = tmp_path / "job.yaml"
    job.write_text(content)
    result = run_cli("run", str(job), "--dry-run")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_head_fails_before_ray_starts(r8_small, tmp_path):
    raw = embed_job(r8_small, str(tmp_path / "out"), str(tmp_path / "head"))
    raw["train"]["inline"] = False
    result = run_cli("run", str(write_job(tmp_path / "job.yaml", raw)))
    assert result.returncode == 2
    assert "No trained head" in result.stderr and "batchlabel train" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_run_then_eval_through_the_cli(r8_small, trained_head, tmp_path):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", embed_job(r8_small, "unused", trained_head))
    result = run_cli("run", str(job), "--set", f"output.path={out}", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"labeled output: {out}" in result.stdout
    assert f"report: {out}/report.md" in result.stdout
    assert "accuracy" in result.stdout
    assert "Traceback" not in result.stderr
    evaluated = run_cli("eval", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    rows = pq.read_metadata(r8_small["test"]).num_rows
    assert json.loads((out / "report.json").read_text())["rows"] == rows
    assert json.loads((out / "_manifest.json").read_text())["rows"] == rows
    assert f"{rows} rows" in evaluated.stdout


@pytest.mark.slow
def test_readme_demo_job_meets_the_accuracy_bar(tmp_path):
    """The README's demo: train the head on all of R8 train, label all of R8 test (acceptance: acc ≥ .93, F1 ≥ .85)."""
    out = tmp_path / "reuters"
    result = run_cli("run", "jobs/reuters_embed.yaml", "--quiet", "--set", f"output.path={out}",
                     "--set", f"train.output={tmp_path / 'head'}", timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == 2189 and report["error_rows"] == 0
    assert report["metrics"]["accuracy"] >= 0.93
    assert report["metrics"]["macro_f1"] >= 0.85
    print(f"demo: accuracy {report['metrics']['accuracy']:.4f} macro-F1 {report['metrics']['macro_f1']:.4f} "
          f"rows/s {report['run']['rows_per_s']:.1f}")
