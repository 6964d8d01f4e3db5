"""`batchlabel submit` / `jobs` against a real Ray head (`ray start --head` on 127.0.0.1) and moto S3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from batchlabel.cluster.submit import api_key_names, connect, default_address, job_env, redact, spec_yaml
from batchlabel.errors import BatchlabelError
from batchlabel.io.sink import read_committed, read_manifest
from batchlabel.io.storage import StorageSettings

from conftest import embed_job, free_port, wait_for_port

BIN = Path(sys.executable).parent
SECRET = "testing-secret"  # the moto fixture's AWS_SECRET_ACCESS_KEY


def _client_env() -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "disabled"  # must match the head's setting (DESIGN.md §4)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real Ray head (GCS + dashboard/job API) on loopback, in its own process group; torn down by group."""
    gcs, dashboard, client, agent = free_port(), free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # the job gets S3 settings from submit
    env.update(
        RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    log = tmp_path_factory.mktemp("ray_head") / "ray_start.log"
    command = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--ray-client-server-port", str(client),
        # the job agent's default port 52365 collides with any other Ray on the machine ("No available agent")
        "--dashboard-agent-listen-port", str(agent),
        "--num-cpus", "2", "--object-store-memory", str(256 * 1024 * 1024), "--disable-usage-stats",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(dashboard, timeout=90)
        address = f"http://127.0.0.1:{dashboard}"
        os.environ["RAY_AUTH_MODE"] = "disabled"
        deadline = time.monotonic() + 60
        while True:  # the job API answers a little after the port opens
            try:
                connect(address).list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Ray job API never came up; see {log}") from None
                time.sleep(0.5)
        yield address
    finally:
        os.environ.pop("RAY_AUTH_MODE", None)
        # stop only what this fixture started: its own process group (never a machine-wide `ray stop`)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def _batchlabel(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "batchlabel"), *args], env=_client_env(), capture_output=True, text=True, timeout=timeout
    )


def _s3_job(tmp_path: Path, r8_small, trained_head: str, bucket: str, moto_endpoint: str) -> Path:
    storage = StorageSettings(endpoint_url=moto_endpoint)
    storage.write_bytes(f"{bucket}/corpus/test.parquet", Path(r8_small["test"]).read_bytes())
    storage.upload_dir(Path(trained_head), f"{bucket}/models/r8_head")
    job = embed_job(r8_small, f"{bucket}/labeled/run1", f"{bucket}/models/r8_head")
    job.pop("train")
    job["name"] = "r8-cluster"
    job["input"]["path"] = f"{bucket}/corpus/test.parquet"
    job["method"]["head"] = f"{bucket}/models/r8_head"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


@pytest.mark.slow
def test_submit_embed_job_to_a_ray_head(ray_head, r8_small, trained_head, s3_bucket, moto_endpoint, tmp_path):
    job = _s3_job(tmp_path, r8_small, trained_head, s3_bucket, moto_endpoint)
    started = time.monotonic()
    done = _batchlabel("submit", str(job), "--address", ray_head, "--wait", "--id", "bl-test-ok",
                       "--set", "runtime.batch_size=32")
    elapsed = time.monotonic() - started
    print(f"\nsubmit -> SUCCEEDED: {elapsed:.1f} s (wall, including the CLI start)")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "job bl-test-ok: SUCCEEDED" in output
    assert "labeled output: " in output  # the job's own log, streamed back
    # credentials travel as env vars but are never printed
    assert SECRET not in output and '"AWS_SECRET_ACCESS_KEY": "***"' in output
    assert f'"AWS_ENDPOINT_URL": "{moto_endpoint}"' in output

    storage = StorageSettings(endpoint_url=moto_endpoint)
    out = f"{s3_bucket}/labeled/run1"
    table = read_committed(out, storage)
    assert table.num_rows == 115 and table.column("error").null_count == 115
    assert read_manifest(out, storage)["rows"] == 115
    report = json.loads(storage.read_bytes(f"{out}/report.json"))
    assert report["metrics"]["accuracy"] > 0.7

    status = _batchlabel("jobs", "status", "bl-test-ok", "--address", ray_head)
    info = json.loads(status.stdout)
    assert status.returncode == 0 and info["status"] == "SUCCEEDED"
    print(f"the job itself ran {(info['end_time'] - info['start_time']) / 1000:.1f} s on the head")
    logs = _batchlabel("jobs", "logs", "bl-test-ok", "--address", ray_head)
    assert logs.returncode == 0 and "labeled output: " in logs.stdout
    stop = _batchlabel("jobs", "stop", "bl-test-ok", "--address", ray_head)
    assert stop.returncode == 0 and "already finished" in stop.stdout
    listed = _batchlabel("jobs", "list", "--address", ray_head)
    assert "bl-test-ok\tSUCCEEDED\tr8-cluster" in listed.stdout


@pytest.mark.slow
def test_failed_job_exits_nonzero(ray_head, r8_small, trained_head, s3_bucket, moto_endpoint, tmp_path):
    job = _s3_job(tmp_path, r8_small, trained_head, s3_bucket, moto_endpoint)
    done = _batchlabel("submit", str(job), "--address", ray_head, "--wait", "--id", "bl-test-fail",
                       "--set", f"input.path={s3_bucket}/corpus/missing.parquet")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "job bl-test-fail: FAILED" in output and "missing.parquet" in output
    follow = _batchlabel("jobs", "logs", "bl-test-fail", "--follow", "--address", ray_head)
    assert follow.returncode == 1


def test_invalid_spec_fails_before_submitting(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ninput: {path: s3://b/x.parquet}\nlabels: [a, b]\nmethod: {name: embed, head: s3://b/h}\n"
                    "output: {path: s3://b/o}\nruntim: {}\n")
    done = _batchlabel("submit", str(path), "--address", "http://127.0.0.1:9")
    assert done.returncode == 2 and "runtim: unknown field" in done.stderr


def test_unreachable_cluster_is_one_clear_error(tmp_path):
    with pytest.raises(BatchlabelError, match="Cannot reach the Ray job API at http://127.0.0.1:9"):
        connect(f"127.0.0.1:{9}")


def test_runtime_env_carries_settings_and_redacts_secrets(r8_small, tmp_path, monkeypatch):
    environ = {"AWS_ACCESS_KEY_ID": "AKIAXXXX", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": "tok",
               "AWS_DEFAULT_REGION": "eu-west-1", "HOME": "/root"}
    env = job_env(environ, "http://127.0.0.1:9000", pass_credentials=True)
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t" and env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert "HOME" not in env and env["AWS_DEFAULT_REGION"] == "eu-west-1"
    shown = json.dumps(redact({"working_dir": "x", "env_vars": env}))
    assert "s3cr3t" not in shown and "tok" not in shown and "AKIAXXXX" not in shown
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(job_env(environ, None, pass_credentials=False))
    # the API key a remote engine names travels with the credentials and is never shown
    keys = api_key_names({"method": {"name": "cascade", "stages": [{"engine": {"api_key_env": "MY_LLM_CRED"}}]}})
    assert keys == {"MY_LLM_CRED"}
    env = job_env({**environ, "MY_LLM_CRED": "sk-live-123"}, None, pass_credentials=True, api_keys=keys)
    assert env["MY_LLM_CRED"] == "sk-live-123"
    assert "sk-live-123" not in json.dumps(redact({"env_vars": env}, keys))
    assert "sk-x" not in json.dumps(redact({"env_vars": {"OPENAI_API_KEY": "sk-x"}}))
    # the spec sent to the cluster holds what the user set (+ overrides), never credentials
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(embed_job(r8_small, "s3://b/out", "s3://b/head")))
    text, spec = spec_yaml(str(job), ["runtime.actors=2"])
    sent = yaml.safe_load(text)
    assert sent["runtime"] == {"actors": 2, "batch_size": 16} and "storage" not in sent
    assert spec.runtime.actors == 2 and "s3cr3t" not in text
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    with pytest.raises(BatchlabelError, match="No Ray cluster address"):
        default_address(None)
    assert default_address("head:8265") == "http://head:8265"
