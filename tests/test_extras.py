"""Optional extras: every shipped job names the extras it needs in its first line (and the spec agrees), `run` /
`train` on a job whose extra is missing say in one line which to install and how, `batchlabel doctor` says
what is here and what a job needs, and the GPU news template loads and dry-runs on CPU."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchlabel.cli import app, extras
from batchlabel.config import load_job

REPO = Path(__file__).resolve().parents[1]
EXTRAS = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
JOBS = sorted((REPO / "jobs").glob("*.yaml"))
PIPELINES = sorted((REPO / "pipelines").glob("*.yaml"))


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def hide(monkeypatch):
    """hide("vllm", ...): those top-level modules look uninstalled to find_spec (as in a `dev`-only install)."""
    real = importlib.util.find_spec

    def install(*modules: str) -> None:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))

    return install


def _written_line(path: Path) -> str:
    return path.read_text().splitlines()[0]


@pytest.mark.parametrize("path", JOBS + PIPELINES, ids=lambda p: p.stem)
def test_every_job_file_names_its_extras_in_its_first_line(path):
    first = _written_line(path)
    match = re.fullmatch(r"# extras: ([a-z0-9, -]+?) \((.*)\)", first)
    assert match, f"{path.name}: first line {first!r} is not `# extras: a, b (...)`"
    declared = extras.declared_extras(path)
    assert declared is not None and set(declared) <= EXTRAS, declared
    if declared:
        assert f"bash scripts/setup.sh dev,{','.join(declared)}" in match.group(2)  # the exact install command
    if path.parent.name == "jobs":
        for need in extras.job_needs(load_job(path)):  # what the spec asks for is declared (any of its extras)
            assert set(need.extras) & set(declared), f"{path.name}: {need.why} needs {need.extras[0]}, not declared"


def test_the_spec_decides_the_extras():
    needs = {p.stem: extras.wanted_extras(extras.job_needs(load_job(p))) for p in JOBS}
    assert needs["reuters_embed"] == [] and needs["reuters_static"] == ["cpu-fast"]
    assert needs["reuters_prompt_vllm"] == ["vllm", "gguf"] and needs["tweets_full_train"] == ["train"]
    assert needs["news_prompt_gpu"] == ["vllm-gpu"]  # gpus_per_actor > 0: the CUDA build is the one to install
    assert needs["reuters_cascade_qwen"] == ["vllm", "qwen"]  # a cascade: every stage counts


def test_run_on_a_job_whose_extra_is_missing_says_which_to_install_in_one_line(hide, tmp_path):
    hide("vllm")
    job = REPO / "jobs" / "reuters_prompt_vllm.yaml"
    result = cli("run", str(job), "--set", f"output.path={tmp_path / 'out'}")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: {job} needs the vllm extra (method.engine: vllm)")
    assert errors[0].endswith("install with: bash scripts/setup.sh dev,vllm")
    assert not (tmp_path / "out").exists()  # refused before Ray or any model


def test_train_and_dry_run_with_missing_extras(hide, tmp_path):
    hide("peft", "accelerate")
    job = REPO / "jobs" / "tweets_full_train.yaml"
    trained = cli("train", str(job), "--set", f"train.output={tmp_path / 'm'}")
    assert trained.exit_code == 2
    assert "needs the train extra (train.method: full)" in trained.stderr
    assert "install with: bash scripts/setup.sh dev,train" in trained.stderr
    planned = cli("run", str(job), "--dry-run", "--set", f"output.path={tmp_path / 'o'}", "--set", f"train.output={tmp_path / 'm'}")
    assert planned.exit_code == 0, planned.output  # the plan needs no extra ...
    assert "warning:" in planned.stderr and "dev,train" in planned.stderr  # ... but says what a real run misses
    (tmp_path / "m").mkdir()  # a model already trained: `run` will not train, so it needs no train extra
    again = cli("run", str(job), "--dry-run", "--set", f"output.path={tmp_path / 'o'}", "--set", f"train.output={tmp_path / 'm'}")
    assert again.exit_code == 0 and "warning:" not in again.stderr


def test_the_install_command_is_scripts_setup_sh(monkeypatch, tmp_path):
    assert extras.install_command(["vllm", "train"]) == "bash scripts/setup.sh dev,vllm,train"  # from the checkout
    monkeypatch.chdir(tmp_path)
    assert extras.install_command(["gguf"]) == f"bash {REPO / 'scripts' / 'setup.sh'} dev,gguf"  # from elsewhere
    script = (REPO / "scripts" / "setup.sh").read_text()
    assert 'EXTRAS="${1:-dev}"' in script and '-e ".[${EXTRAS}]"' in script  # what the command relies on


def test_doctor_lists_every_extra_and_what_a_job_needs(hide):
    plain = cli("doctor")
    assert plain.exit_code == 0, plain.output
    for extra in EXTRAS:
        assert re.search(rf"^  {re.escape(extra)} +(installed|not installed)", plain.stdout, re.MULTILINE), extra
    assert "smollm2-135m" in plain.stdout
    ok = cli("doctor", str(REPO / "jobs" / "reuters_static.yaml"))
    assert ok.exit_code == 0 and "cpu-fast" in ok.stdout and "agrees with the spec" in ok.stdout
    hide("onnxruntime", "onnxscript", "model2vec")
    missing = cli("doctor", str(REPO / "jobs" / "reuters_static.yaml"))
    assert missing.exit_code == 1
    assert "MISSING" in missing.stdout and missing.stdout.rstrip().endswith("bash scripts/setup.sh dev,cpu-fast")


def test_import_gguf_without_the_gguf_extra_names_it(hide, tmp_path):
    hide("gguf")
    result = cli("models", "import-gguf", "smollm2-135m", "--dest", str(tmp_path))
    assert result.exit_code == 2
    assert "Importing smollm2-135m needs the gguf extra: bash scripts/setup.sh dev,gguf" in result.stderr


# --- the GPU news template ------------------------------------------------------------------------------------

GPU_JOB = REPO / "jobs" / "news_prompt_gpu.yaml"


def test_the_gpu_news_template_is_a_1_to_8b_vllm_job_for_millions_of_rows():
    spec = load_job(GPU_JOB)
    engine = spec.method.engine
    assert spec.method.name == "prompt" and engine.name == "vllm"
    size = float(re.search(r"(\d+(?:\.\d+)?)B", engine.model).group(1))
    assert 1 <= size <= 8, engine.model
    assert engine.dtype == "bfloat16" and engine.prefix_caching
    assert spec.method.items_per_prompt >= 4 and spec.method.constrained  # batched structured output
    assert spec.runtime.gpus_per_actor == 1 and spec.runtime.actors >= 2  # one actor per GPU
    assert spec.output.shard_rows >= 10_000 and spec.input.limit is None  # millions of rows, few markers
    assert spec.input.path.startswith("s3://") and spec.output.path.startswith("s3://")
    assert extras.declared_extras(GPU_JOB) == ["vllm-gpu"]


def test_the_gpu_news_template_dry_runs_on_cpu_without_vllm_torch_or_the_model(tmp_path):
    """In a fresh interpreter: the plan of 2,189 R8 rows, and neither vllm, torch nor transformers imported."""
    code = (
        "import sys\n"
        "from batchlabel.cli import app\n"
        "try:\n"
        f"    app(['run', {str(GPU_JOB)!r}, '--dry-run', '--set', 'input.path=data/reuters_r8/test.parquet',"
        f" '--set', 'output.path={tmp_path / 'out'}'])\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "print('HEAVY', sorted(m for m in ('vllm', 'torch', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"rows": 2189' in result.stdout and "nothing was labeled" in result.stdout
    assert '"gpus_per_actor": 1.0' in result.stdout and '"actors": 8' in result.stdout
    assert "HEAVY []" in result.stdout
    assert not (tmp_path / "out").exists()
