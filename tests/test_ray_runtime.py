"""How actors and write tasks share a node's CPUs (no Ray started: pure arithmetic)."""

from __future__ import annotations

import pytest

from batchlabel.config import RuntimeSpec
from batchlabel.run.ray_runtime import WRITE_TASK_CPUS, ClusterResources, actor_cpus, actor_threads


@pytest.mark.parametrize("cpus, actors", [(2, 1), (2, 2), (2, 3), (4, 4), (16, 15), (3, 2)])
def test_local_actors_always_leave_write_tasks_their_cpu(cpus, actors):
    runtime = RuntimeSpec(actors=actors)
    per_actor = actor_cpus(runtime, ClusterResources(cpus=cpus, gpus=0, started_here=True))
    assert 0 < per_actor <= runtime.cpus_per_actor
    assert actors * per_actor + WRITE_TASK_CPUS <= cpus + 1e-9


def test_a_remote_cluster_gets_what_the_spec_asks_for():
    runtime = RuntimeSpec(actors=8, cpus_per_actor=2.0, threads_per_actor=None)
    cluster = ClusterResources(cpus=64, gpus=0, started_here=False)
    assert actor_cpus(runtime, cluster) == 2.0 and actor_threads(runtime, cluster) == 2


def test_local_threads_split_the_cores_between_actors(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)), raising=False)
    cluster = ClusterResources(cpus=4, gpus=0, started_here=True)
    assert actor_threads(RuntimeSpec(actors=1), cluster) == 4
    assert actor_threads(RuntimeSpec(actors=2), cluster) == 2
    assert actor_threads(RuntimeSpec(actors=8), cluster) == 1
    assert actor_threads(RuntimeSpec(actors=2, threads_per_actor=3), cluster) == 3
