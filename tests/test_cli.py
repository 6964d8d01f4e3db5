"""The `batchlabel` command as users run it: subprocesses, their own local Ray, real files."""

from __future__ import annotations

import json
import os
import re
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


# --- one table of commands, one error handler (cli/__init__.py, cli/common.py) -----------------------------------

ALL_COMMANDS = ["run", "train", "eval", "init", "schema", "doctor", "submit", "jobs", "nightly", "schedule", "models", "review"]


def test_help_lists_every_command_group():
    from batchlabel.cli import COMMANDS

    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^│ ([a-z]+)  ", result.stdout.split("Commands", 1)[1], flags=re.MULTILINE)
    assert sorted(listed) == sorted(ALL_COMMANDS) == sorted(COMMANDS)
    jobs = run_cli("jobs", "--help")
    assert jobs.returncode == 0 and all(sub in jobs.stdout for sub in ("status", "logs", "stop", "list"))


def _cli_runner_invoke(*args: str):
    from typer.testing import CliRunner

    from batchlabel.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture
def unreachable_cluster(monkeypatch):
    from batchlabel.cluster import submit as api
    from batchlabel.errors import BatchlabelError

    def connect(address):
        raise BatchlabelError(f"Cannot reach the Ray job API at {address}.")

    monkeypatch.setattr(api, "connect", connect)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "{bad}"], "not valid YAML"),
        (["run", "{bad}", "--dry-run"], "not valid YAML"),
        (["train", "{bad}"], "not valid YAML"),
        (["eval", "{tmp}/nothing"], "holds no committed batchlabel run"),
        (["submit", "{bad}", "--address", "http://127.0.0.1:9"], "not valid YAML"),
        (["jobs", "status", "x", "--address", "http://127.0.0.1:9"], "Cannot reach the Ray job API"),
        (["jobs", "logs", "x", "--follow", "--address", "http://127.0.0.1:9"], "Cannot reach the Ray job API"),
        (["jobs", "stop", "x", "--address", "http://127.0.0.1:9"], "Cannot reach the Ray job API"),
        (["jobs", "list", "--address", "http://127.0.0.1:9"], "Cannot reach the Ray job API"),
        (["nightly", "{bad}"], "not valid YAML"),
        (["schedule", "{bad}"], "not valid YAML"),
        (["models", "import-gguf", "no-such-model"], "Unknown model 'no-such-model'"),
    ],
)
def test_user_error_in_any_command_is_exit_2_and_one_error_line(tmp_path, unreachable_cluster, args, message):
    """The app itself (as CliRunner and `app(...)` call it, not only main()) turns a BatchlabelError into exit 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [\n")
    result = _cli_runner_invoke(*[a.format(bad=bad, tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], result.stderr
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output  # nothing else escaped


def test_user_error_through_main_is_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [\n")
    code = "import sys; from batchlabel.cli import main; sys.argv = ['batchlabel', 'schedule', sys.argv[1]]; main()"
    result = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_interrupted_run_exits_130_with_the_resume_hint(r8_small, tmp_path, monkeypatch):
    from batchlabel.run import pipeline

    monkeypatch.setattr(pipeline, "run_job", _interrupt)
    job = write_job(tmp_path / "job.yaml", embed_job(r8_small, str(tmp_path / "out"), str(tmp_path / "head")))
    result = _cli_runner_invoke("run", str(job), "--quiet")
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == "interrupted: committed shards are kept; run the same command to resume"


def test_interrupted_submit_wait_exits_130_with_the_job_keeps_running_hint(monkeypatch):
    from batchlabel.cluster import submit as api

    submission = api.Submission("bl-1", "http://127.0.0.1:9", "batchlabel run job.yaml", {}, [])
    monkeypatch.setattr(api, "submit", lambda *args, **kwargs: submission)
    monkeypatch.setattr(api, "connect", lambda address: object())
    monkeypatch.setattr(api, "wait", _interrupt)
    result = _cli_runner_invoke("submit", "job.yaml", "--wait")
    assert result.exit_code == 130, result.output
    assert "submitted bl-1 to http://127.0.0.1:9" in result.stdout
    assert result.stderr.strip() == (
        "stopped waiting; the job keeps running on the cluster (`batchlabel jobs stop ID` stops it)"
    )


def test_interrupt_without_a_hint_exits_130_quietly(monkeypatch):
    from batchlabel.run import pipeline

    monkeypatch.setattr(pipeline, "evaluate_output", _interrupt)
    result = _cli_runner_invoke("eval", "somewhere")
    assert result.exit_code == 130 and result.stderr == "" and "Aborted" not in result.output


def test_every_command_runs_with_quiet_libraries(tmp_path, monkeypatch):
    from batchlabel.cli.common import QUIET_ENV

    for name in QUIET_ENV:  # setenv first, so that monkeypatch restores "unset" afterwards
        monkeypatch.setenv(name, "unset-by-test")
        monkeypatch.delenv(name)
    _cli_runner_invoke("eval", str(tmp_path / "nothing"))
    assert {name: os.environ.get(name) for name in QUIET_ENV} == QUIET_ENV
