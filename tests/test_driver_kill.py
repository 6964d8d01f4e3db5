"""SIGKILL the driver (and the local Ray it started) at several points; reruns finish exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from batchlabel.config import parse_job
from batchlabel.io.sink import read_committed
from batchlabel.io.storage import StorageSettings

from conftest import REPO, embed_job

pytestmark = pytest.mark.slow


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process it started (the local Ray node included): a crash."""
    try:
        parent = psutil.Process(pid)
        victims = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for proc in victims:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=20)


def committed(out: Path) -> dict[str, int]:
    """Committed shard keys → mtime of their part file."""
    markers = sorted((out / "_batchlabel" / "shards").glob("*.json")) if (out / "_batchlabel").exists() else []
    return {m.stem: (out / f"part-{m.stem}.parquet").stat().st_mtime_ns for m in markers}


def start(job: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "batchlabel.cli", "run", str(job), "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_driver_killed_at_five_points_then_resumes_exactly_once(r8_small, trained_head, tmp_path):
    out = tmp_path / "out"
    job = embed_job(r8_small, str(out), trained_head)
    inner = {**job["method"], "head": trained_head}
    job["method"] = {"name": "custom", "labeler": "batchlabel.testing.faults:FaultyLabeler",
                     "options": {"inner": inner, "state_dir": str(tmp_path / "state"), "sleep_s": 0.4}}
    job["output"]["shard_rows"] = 10
    job["runtime"]["batch_size"] = 10
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    total_shards = -(-pq.read_metadata(r8_small["test"]).num_rows // 10)

    kills = []
    # kill points: during start-up (no shard yet), then after 2, 4, 7 and 9 committed shards
    for target in [None, 2, 4, 7, 9]:
        before = committed(out)
        proc = start(path)
        deadline = time.monotonic() + 300
        reached = False
        while not reached and time.monotonic() < deadline and proc.poll() is None:
            done = committed(out)
            # start-up: 4 s in, Ray and the actors are still starting (checked below: nothing new committed)
            reached = time.monotonic() > deadline - 296 if target is None else len(done) >= target
            if not reached:
                time.sleep(0.05)
        assert proc.poll() is None, f"run finished before the kill point {target}: {proc.communicate()}"
        assert reached, f"kill point {target} not reached in 300 s (committed: {len(committed(out))})"
        if target is None:
            assert committed(out).keys() == before.keys(), "a shard was committed before the start-up kill"
        kill_tree(proc.pid)
        proc.communicate()
        after = committed(out)
        assert target is None or len(after) >= target
        kills.append(len(after))
        # committed shards are never rewritten by a later run
        assert all(after[key] == mtime for key, mtime in before.items())
        assert not (out / "_manifest.json").exists()

    before = committed(out)
    final = start(path)
    stdout, stderr = final.communicate(timeout=600)
    assert final.returncode == 0, stderr[-3000:]
    after = committed(out)
    assert all(after[key] == mtime for key, mtime in before.items())
    assert len(after) == total_shards
    redone_rows = total_shards * 10 - len(before) * 10
    assert f"this run labeled " in stdout
    labeled_now = int(stdout.split("this run labeled ")[1].split()[0])
    assert labeled_now <= redone_rows  # only shards not committed before the final run were labeled

    table = read_committed(str(out), StorageSettings())
    ids = table.column("id").to_pylist()
    expected = pq.read_table(r8_small["test"]).column("id").to_pylist()
    assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids)  # 0 lost, 0 duplicated
    from batchlabel.methods import build_labeler

    reference = build_labeler(parse_job({**embed_job(r8_small, str(out), trained_head)}))
    source = pq.read_table(r8_small["test"])
    want = dict(zip(source.column("id").to_pylist(), reference.label(source.column("text").to_pylist()).labels))
    assert dict(zip(ids, table.column("label").to_pylist())) == want
    assert len(kills) == 5 and kills == sorted(kills) and kills[-1] < total_shards, kills  # five real kill points
    print(f"kills: {len(kills)}, committed shards after each kill: {kills}, total shards {total_shards}")
