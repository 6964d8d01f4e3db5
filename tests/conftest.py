"""Shared fixtures: small real R8 samples, a trained head, a moto S3 server, a local Ray."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
R8_LABELS = ["earn", "acq", "crude", "trade", "money-fx", "interest", "ship", "grain"]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def stratified_sample(table: pa.Table, per_label: int, prefix_rows: int | None = None) -> pa.Table:
    """Up to ``per_label`` rows of each label, in file order (deterministic)."""
    labels = table.column("label").to_pylist()
    taken: dict[str, int] = {}
    keep = []
    for index, label in enumerate(labels):
        if taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            keep.append(index)
    return table.take(pa.array(keep))


@pytest.fixture(scope="session")
def r8_small(tmp_path_factory) -> dict[str, Path]:
    """Real R8 rows: train = 30 per label (≤240 rows), test = 15 per label (≤120 rows)."""
    root = tmp_path_factory.mktemp("r8")
    train = stratified_sample(pq.read_table(DATA / "reuters_r8" / "train.parquet"), 30)
    test = stratified_sample(pq.read_table(DATA / "reuters_r8" / "test.parquet"), 15)
    pq.write_table(train, root / "train.parquet")
    pq.write_table(test, root / "test.parquet")
    return {"train": root / "train.parquet", "test": root / "test.parquet", "root": root}


def embed_job(r8: dict[str, Path], output: str, head: str, **extra) -> dict:
    """A raw job dict for the embed method on the small R8 sample."""
    job = {
        "name": "r8-small",
        "input": {"path": str(r8["test"]), "gold_column": "label"},
        "labels": R8_LABELS,
        "method": {"name": "embed", "max_length": 128},
        "train": {"input": {"path": str(r8["train"]), "gold_column": "label"}, "output": head, "inline": True},
        "runtime": {"actors": 1, "batch_size": 16},
        "output": {"path": output, "shard_rows": 40},
    }
    for key, value in extra.items():
        job[key] = {**job.get(key, {}), **value} if isinstance(value, dict) else value
    return job


@pytest.fixture(scope="session")
def trained_head(r8_small, tmp_path_factory) -> str:
    """A linear head trained once per session on the small R8 train sample."""
    from batchlabel.config import parse_job
    from batchlabel.training.base import train_model

    head = str(tmp_path_factory.mktemp("head") / "r8_head")
    spec = parse_job(embed_job(r8_small, str(tmp_path_factory.mktemp("unused")), head))
    train_model(spec, progress=False)
    return head


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the in-process integration tests (run_job reuses it, never stops it)."""
    import ray

    # Ray workers write the labeled shards, so they need S3 credentials like the driver (a real cluster gives
    # them through the environment or an instance role); these are moto_endpoint's fake ones
    fake = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret"}
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024,
             _node_ip_address="127.0.0.1", log_to_driver=False, runtime_env={"env_vars": fake})
    yield
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real moto_server S3 endpoint on loopback, with fake credentials in the environment."""
    port = free_port()
    # the moto of the test environment first: a moto_server found on PATH may belong to another Python
    # (a pyenv shim with moto 5.2.1 answered CompleteMultipartUpload in a way pyarrow 26 rejects)
    beside = Path(sys.executable).with_name("moto_server")
    exe = str(beside) if beside.exists() else shutil.which("moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
        os.environ.update(
            AWS_ACCESS_KEY_ID="testing-key-id", AWS_SECRET_ACCESS_KEY="testing-secret",
            AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint,
        )
        yield endpoint
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(moto_endpoint):
    """A fresh bucket on the moto endpoint; returns its s3:// URL."""
    import uuid

    import boto3

    name = f"bl-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"
