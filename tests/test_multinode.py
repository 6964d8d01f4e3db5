"""A real two-node Ray cluster on this machine: `ray start --head` plus a worker node (`ray start --address`),
both on 127.0.0.1, and `batchlabel run` against it through RAY_ADDRESS.

- the labeling actors land on both nodes (each node has room for one 2-CPU actor only) and both label rows;
- the worker node is killed mid-job (its `ray start`, raylet and every process under it, by pid, SIGKILL): the
  job either finishes on the head or fails with our one-paragraph message, and a rerun resumes; the committed
  output holds every input id exactly once.

Multi-node needs RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 (scripts/test.sh exports 0, which makes the second
`ray start` refuse) and the same RAY_AUTH_MODE on every node and client; both are set in the subprocess env.
The labeler is the no-op one (batchlabel.testing.noop), recording the Ray node of every call in a side dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import free_port, wait_for_port

from batchlabel.io.sink import read_committed, read_manifest
from batchlabel.io.storage import StorageSettings

BIN = Path(sys.executable).parent
ROWS = 2400
SHARD_ROWS = 200
LABELS = ["a", "b"]

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "AWS_"))}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",  # else the second node is refused ("not supported on Windows and OSX")
        RAY_AUTH_MODE="disabled",  # the same on every node and on the client (docs/design.md)
        # find a dead node in ~2 s instead of ~30 s (GCS health checks)
        RAY_health_check_period_ms="500", RAY_health_check_timeout_ms="500", RAY_health_check_failure_threshold="3",
        HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


class Node:
    """One `ray start --block` process (its own session/process group) and the processes it started."""

    def __init__(self, args: list[str], log: Path):
        ports = {flag: free_port() for flag in ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
                                                "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                                "--runtime-env-agent-port")}
        self.node_manager_port = ports["--node-manager-port"]
        command = [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                   "--object-store-memory", str(150 * 1024 * 1024), *args]
        for flag, port in ports.items():
            command += [flag, str(port)]
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(command, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def pids(self) -> list[int]:
        """The `ray start` process and everything under it (raylet, agents, Ray workers)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> list[int]:
        """SIGKILL every process of the node (no clean-up, as when a machine dies); wait until they are gone."""
        pids = self.pids()
        procs = []
        for pid in reversed(pids):  # children first
            try:
                procs.append(psutil.Process(pid))
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the node's own process group
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        _, alive = psutil.wait_procs(procs, timeout=30)  # a loaded machine delivers SIGKILL late
        assert not alive, f"still running after SIGKILL: {alive}"
        return pids


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """Head: 3 CPUs (one 2-CPU actor + the write tasks); worker: 2 CPUs (one 2-CPU actor). Torn down by pid."""
    logs = tmp_path_factory.mktemp("ray_nodes")
    gcs = free_port()
    nodes: list[Node] = []
    try:
        head = Node(["--head", "--port", str(gcs), "--include-dashboard=false", "--num-cpus", "3",
                     "--ray-client-server-port", str(free_port())], logs / "head.log")
        nodes.append(head)
        wait_for_port(gcs, timeout=60)
        wait_for_port(head.node_manager_port, timeout=60)
        worker = Node(["--address", f"127.0.0.1:{gcs}", "--num-cpus", "2"], logs / "worker.log")
        nodes.append(worker)
        wait_for_port(worker.node_manager_port, timeout=60)
        yield {"address": f"127.0.0.1:{gcs}", "head": head, "worker": worker}
    finally:
        for node in reversed(nodes):
            node.kill()


def _corpus(path: Path) -> list[str]:
    ids = [f"r{i:05d}" for i in range(ROWS)]
    pq.write_table(pa.table({"id": ids, "text": [f"text of {i}" for i in ids]}), path, row_group_size=400)
    return ids


def _job(tmp_path: Path, name: str, sleep_s: float, **runtime) -> tuple[Path, Path, Path, list[str]]:
    corpus, output, records = tmp_path / "corpus.parquet", tmp_path / "out", tmp_path / "records"
    ids = _corpus(corpus)
    job = {
        "name": name,
        "input": {"path": str(corpus)},
        "labels": LABELS,
        "method": {"name": "custom", "labeler": "batchlabel.testing.noop:NoopLabeler",
                   "options": {"sleep_s": sleep_s, "record_dir": str(records)}},
        "runtime": {"actors": 2, "cpus_per_actor": 2, "batch_size": 50, **runtime},
        "output": {"path": str(output), "shard_rows": SHARD_ROWS},
        "eval": {"enabled": False},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path, output, records, ids


def _run(job: Path, address: str, *extra: str, timeout: float = 120) -> subprocess.Popen:
    # the actor pool starts only once both actors are up, so that the first one cannot take every batch
    env = {**_env(), "RAY_ADDRESS": address, "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "120"}
    return subprocess.Popen([str(BIN / "batchlabel"), "run", str(job), "--quiet", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"batchlabel run did not end within {timeout} s:\n{err[-3000:]}") from None
    return proc.returncode, out + err


def _records(records: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))]


def _committed_ids(output: Path) -> list[str]:
    return read_committed(str(output), StorageSettings(), columns=["id"]).column("id").to_pylist()


def test_actors_on_both_nodes_label_rows(two_nodes, tmp_path):
    job, output, records, ids = _job(tmp_path, "two-nodes", sleep_s=0.15)
    code, text = _finish(_run(job, two_nodes["address"]))
    assert code == 0, text[-3000:]
    calls = _records(records)
    by_node: dict[str, int] = {}
    for call in calls:
        by_node[call["node"]] = by_node.get(call["node"], 0) + len(call["texts"])
    assert len(by_node) == 2 and all(by_node.values()), by_node  # both nodes labeled rows
    assert sum(by_node.values()) == ROWS
    assert sorted(_committed_ids(output)) == ids  # every id once
    assert read_manifest(str(output), StorageSettings())["rows"] == ROWS


def test_worker_node_killed_mid_job_then_resume(two_nodes, tmp_path):
    # a stuck pipeline fails after 20 s without progress (Ray Data's no-progress timeout)
    job, output, records, ids = _job(tmp_path, "node-kill", sleep_s=0.3, stall_timeout_s=20)
    run = _run(job, two_nodes["address"])
    deadline = time.monotonic() + 90
    while True:  # kill the worker node once it has labeled a few batches (and the head has too)
        nodes = {}
        for call in _records(records):
            nodes[call["node"]] = nodes.get(call["node"], 0) + 1
        if len(nodes) == 2 and min(nodes.values()) >= 2:
            break
        assert run.poll() is None, f"the job ended before the kill: {_finish(run)[1][-3000:]}"
        assert time.monotonic() < deadline, f"actors never ran on both nodes: {nodes}"
        time.sleep(0.2)
    killed = two_nodes["worker"].kill()
    assert len(killed) >= 3  # `ray start`, the raylet and at least the actor's worker process
    code, text = _finish(run)
    first = read_manifest(str(output), StorageSettings())
    print(f"\nafter the worker node was killed: exit {code}; {text.strip()[-400:]}")
    if code != 0:  # failed cleanly: our one paragraph, committed shards kept, no manifest
        assert "run the same command again to resume" in text, text[-3000:]
        assert first is None
        markers = [json.loads(p.read_text()) for p in (output / "_batchlabel" / "shards").glob("*.json")]
        labeled_before = sum(len(call["texts"]) for call in _records(records))
        # resume on the head alone (one actor fits there; runtime.* does not change the spec hash)
        code, text = _finish(_run(job, two_nodes["address"], "--set", "runtime.actors=1"))
        assert code == 0, text[-3000:]
        manifest = read_manifest(str(output), StorageSettings())
        # it resumed: the rerun labeled exactly the rows of the shards that were not committed
        assert markers, "nothing was committed before the failure"
        relabeled = sum(len(call["texts"]) for call in _records(records)) - labeled_before
        assert relabeled == ROWS - sum(m["rows"] for m in markers)
    else:
        manifest = first
    assert len({c["node"] for c in _records(records)}) == 2
    committed = _committed_ids(output)
    assert len(committed) == len(set(committed)) == ROWS  # nothing duplicated
    assert sorted(committed) == ids  # nothing lost
    assert manifest["rows"] == ROWS
