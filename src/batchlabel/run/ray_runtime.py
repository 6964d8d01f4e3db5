"""Start (and stop) a loopback-only local Ray, or connect to the cluster in $RAY_ADDRESS."""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from batchlabel.config import RuntimeSpec

# CPU that each write task asks Ray for. Local actors never take it: with actors holding every CPU the write
# tasks could never be scheduled and the job would hang (it did with 2 actors on 2 cores, then for the read
# tasks). The actors read their shards themselves (io/datasource.py), so no read task needs a CPU.
WRITE_TASK_CPUS = 0.5


@dataclass(frozen=True)
class ClusterResources:
    cpus: float
    gpus: float
    started_here: bool


def actor_cpus(runtime: RuntimeSpec, cluster: ClusterResources) -> float:
    """CPUs to reserve per actor so that write tasks can always be scheduled.

    (docs/design.md, "Ray: read tasks, actors and the CPU deadlock")
    """
    if not cluster.started_here:
        return runtime.cpus_per_actor
    room = max(0.01, math.floor((cluster.cpus - WRITE_TASK_CPUS) / runtime.actors * 1000) / 1000)
    return min(runtime.cpus_per_actor, room)


def actor_threads(runtime: RuntimeSpec, cluster: ClusterResources) -> int:
    if runtime.threads_per_actor:
        return runtime.threads_per_actor
    if cluster.started_here:  # the cores of this machine, not Ray's logical CPU count
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(cores, int(cluster.cpus)) // runtime.actors)
    return max(1, int(round(runtime.cpus_per_actor)))


def current_cluster(started: bool = False) -> ClusterResources:
    """Resources of the Ray this process is connected to."""
    import ray

    resources = ray.cluster_resources()
    # a single-node Ray that a caller opened in this process (tests, nightly) is sized like our own
    single_node = started or (not os.environ.get("RAY_ADDRESS") and len(ray.nodes()) == 1)
    return ClusterResources(resources.get("CPU", 1.0), resources.get("GPU", 0.0), single_node)


@contextmanager
def ray_session(runtime: RuntimeSpec, verbose: bool = False) -> Iterator[ClusterResources]:
    """A Ray connection for the duration of a job. Local Ray listens on 127.0.0.1 only."""
    import ray

    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        common = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}
        if address:
            ray.init(address=address, **common)
        else:
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            ray.init(
                address="local",  # always a new local instance, never a `ray start` cluster found by chance
                num_cpus=max(2, os.cpu_count() or 1),  # logical: room for the write tasks beside the actors
                include_dashboard=False,
                object_store_memory=runtime.object_store_mb * 1024 * 1024,
                _node_ip_address="127.0.0.1",
                **common,
            )
            started = True
    if not verbose:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        yield current_cluster(started)
    finally:
        if started:
            ray.shutdown()
