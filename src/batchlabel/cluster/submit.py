"""`batchlabel submit`: run a job on a Ray cluster through the Job Submission API.

The validated job spec travels in a tiny runtime-env ``working_dir`` (one file, ``job.yaml``) and
the entrypoint is ``batchlabel run job.yaml`` on the cluster. S3 endpoint/region settings and the
submitter's AWS credentials (when set) are passed as runtime-env variables: they are never written
into the spec, and every printed runtime env is redacted. On a cluster whose nodes have an IAM
instance role, submit with ``--no-credentials`` so that the role is used instead.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from batchlabel.errors import BatchlabelError

SPEC_FILE = "job.yaml"
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
SETTINGS_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")
REDACTED = "***"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
LOG_GRACE_S = 30.0  # how long the log stream may run on after the job ended
AGENT_WAIT_S = 90.0  # how long to retry "No available agent to submit job" on a head that just started


@dataclass
class Submission:
    submission_id: str
    address: str
    entrypoint: str
    runtime_env: dict[str, Any]  # redacted copy (safe to print)
    warnings: list[str]


def default_address(address: str | None) -> str:
    """--address, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS (an http:// dashboard address)."""
    value = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not value:
        raise BatchlabelError(
            "No Ray cluster address: pass --address http://HEAD:8265 (the dashboard / job API port) "
            "or set RAY_API_SERVER_ADDRESS."
        )
    if "://" not in value:
        value = f"http://{value}"
    return value


def connect(address: str | None):
    """A JobSubmissionClient for the cluster, with a one-paragraph error when it is unreachable."""
    from ray.job_submission import JobSubmissionClient

    url = default_address(address)
    try:
        return JobSubmissionClient(url)
    except Exception as err:  # ConnectionError, auth errors, version mismatch...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BatchlabelError(
            f"Cannot reach the Ray job API at {url}: {first[:300]}. Check the address (the dashboard port, "
            "8265 by default), that the head runs with the dashboard, and that RAY_AUTH_MODE (and the auth "
            "token) match the cluster's."
        ) from None


def api_key_names(spec_dump: Any) -> set[str]:
    """The environment variables a job spec names as API keys (``api_key_env`` anywhere, cascade stages included)."""
    names: set[str] = set()
    if isinstance(spec_dump, dict):
        for key, value in spec_dump.items():
            if key == "api_key_env" and isinstance(value, str) and value:
                names.add(value)
            else:
                names |= api_key_names(value)
    elif isinstance(spec_dump, list):
        for item in spec_dump:
            names |= api_key_names(item)
    return names


def job_env(
    environ: Mapping[str, str], endpoint_url: str | None, pass_credentials: bool, api_keys: set[str] | frozenset = frozenset()
) -> dict[str, str]:
    """Environment variables for the job: S3 settings, credentials and the spec's API keys (optional), quiet libraries."""
    env = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name in SETTINGS_ENV:
        if environ.get(name):
            env[name] = environ[name]
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    if pass_credentials:
        for name in (*SECRET_ENV, *sorted(api_keys)):
            if environ.get(name):
                env[name] = environ[name]
    return env


def redact(runtime_env: dict[str, Any], api_keys: set[str] | frozenset = frozenset()) -> dict[str, Any]:
    """A printable copy: secret values (credentials, the spec's API keys, any *KEY*/*SECRET*/... name) as ***."""
    env = dict(runtime_env.get("env_vars", {}))
    for name in env:
        if name in SECRET_ENV or name in api_keys or any(
            word in name.upper() for word in ("SECRET", "TOKEN", "PASSWORD", "KEY")
        ):
            env[name] = REDACTED
    return {**runtime_env, "env_vars": env}


def spec_yaml(job: str, overrides: list[str] | None) -> tuple[str, Any]:
    """Validate the job locally (fail before submitting) and return it as YAML (fields the user set)."""
    from batchlabel.config import load_job

    spec = load_job(job, overrides or [])
    text = yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True), sort_keys=False, allow_unicode=True)
    return text, spec


def local_path_warnings(spec) -> list[str]:
    """Local paths are resolved on the cluster's nodes, not on this machine: say so."""
    paths = {"input.path": spec.input.path, "output.path": spec.output.path}
    if spec.train is not None:
        paths["train.output"] = spec.train.output
    head = getattr(spec.method, "head", None)
    if head:
        paths["method.head"] = head
    return [
        f"{field} {value!r} is a local path: it is read/written on the cluster node that runs the job"
        for field, value in paths.items()
        if not value.startswith("s3://")
    ]


def submit(
    job: str,
    address: str | None,
    overrides: list[str] | None = None,
    submission_id: str | None = None,
    pass_credentials: bool = True,
    entrypoint_args: str = "",
    environ: Mapping[str, str] | None = None,
) -> Submission:
    """Validate ``job`` and submit ``batchlabel run job.yaml`` to the cluster; return at once."""
    environ = os.environ if environ is None else environ
    text, spec = spec_yaml(job, overrides)
    api_keys = api_key_names(spec.model_dump(mode="json"))
    client = connect(address)
    submission_id = submission_id or f"batchlabel-{_slug(spec.name)}-{uuid.uuid4().hex[:8]}"
    entrypoint = f"batchlabel run {SPEC_FILE}" + (f" {entrypoint_args}" if entrypoint_args else "")
    with tempfile.TemporaryDirectory(prefix="batchlabel-submit-") as workdir:
        (Path(workdir) / SPEC_FILE).write_text(text, encoding="utf-8")
        runtime_env = {"working_dir": workdir, "env_vars": job_env(environ, spec.storage.endpoint_url, pass_credentials, api_keys)}
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                submission_id = client.submit_job(
                    entrypoint=entrypoint,
                    runtime_env=runtime_env,
                    submission_id=submission_id,
                    metadata={"batchlabel_job": spec.name, "spec_hash": spec.result_hash()},
                )
                break
            except Exception as err:
                text = str(err)
                if "try again later" in text and time.monotonic() < deadline:
                    time.sleep(2.0)  # a freshly started head: its job agent is not up yet
                    continue
                first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
                hint = (
                    " The head's job agent is not running: check its dashboard_agent.log (another Ray on the same "
                    "machine may hold port 52365; start the head with --dashboard-agent-listen-port)."
                    if "No available agent" in text
                    else ""
                )
                raise BatchlabelError(f"The cluster refused the job: {first[:400]}{hint}") from None
    shown = redact({**runtime_env, "working_dir": f"<{SPEC_FILE} of {spec.name}>"}, api_keys)
    return Submission(submission_id, default_address(address), entrypoint, shown, local_path_warnings(spec))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower())[:40] or "job"


def status(client, submission_id: str) -> dict[str, Any]:
    """Status, message and timing of a submitted job."""
    try:
        info = client.get_job_info(submission_id)
    except Exception as err:
        raise BatchlabelError(f"No job {submission_id!r} on this cluster ({str(err).splitlines()[0][:200]}).") from None
    return {
        "submission_id": submission_id,
        "status": str(getattr(info.status, "value", info.status)),
        "message": info.message,
        "entrypoint": info.entrypoint,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "metadata": info.metadata,
    }


def wait(
    client,
    submission_id: str,
    write: Callable[[str], None] | None = None,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> str:
    """Stream the job's log (through ``write``) until it ends; return the final status.

    The log comes from Ray's ``tail_job_logs`` (a websocket the job server pushes new lines into), never by
    downloading the whole log again; the status (a small JSON) is polled every ``poll_s`` and printed when it
    changes.
    """
    import asyncio

    try:
        return asyncio.run(asyncio.wait_for(_follow(client, submission_id, write, poll_s), timeout_s))
    except asyncio.TimeoutError:
        current = status(client, submission_id)["status"]
        raise BatchlabelError(f"Job {submission_id} is still {current} after {timeout_s:.0f} s (it keeps running).") from None


async def _follow(client, submission_id: str, write: Callable[[str], None] | None, poll_s: float) -> str:
    import asyncio

    loop = asyncio.get_running_loop()

    async def statuses() -> str:
        last = None
        while True:
            current = (await loop.run_in_executor(None, status, client, submission_id))["status"]
            if write is not None and current != last:
                write(f"[batchlabel] job {submission_id}: {current}\n")
                last = current
            if current in TERMINAL:
                return current
            await asyncio.sleep(poll_s)

    if write is None:
        return await statuses()
    shown = 0

    async def stream() -> None:
        nonlocal shown
        async for chunk in client.tail_job_logs(submission_id):
            write(chunk)
            shown += len(chunk)

    streaming = asyncio.create_task(stream())
    final = await statuses()
    try:  # the job server closes the stream once the job's log is complete
        await asyncio.wait_for(streaming, LOG_GRACE_S)
        complete = True
    except Exception:  # still open after the grace time, or broke off (RuntimeError, aiohttp errors)
        complete = False
    if not complete or not shown:  # or the job ended before its driver ran: the log once, at the end
        rest = await loop.run_in_executor(None, client.get_job_logs, submission_id)
        write(rest[shown:])
    return final


def stop(client, submission_id: str) -> bool:
    try:
        return bool(client.stop_job(submission_id))
    except Exception as err:
        raise BatchlabelError(f"Cannot stop job {submission_id!r}: {str(err).splitlines()[0][:200]}") from None


def logs(client, submission_id: str) -> str:
    try:
        return client.get_job_logs(submission_id)
    except Exception as err:
        raise BatchlabelError(f"No logs for job {submission_id!r}: {str(err).splitlines()[0][:200]}") from None
