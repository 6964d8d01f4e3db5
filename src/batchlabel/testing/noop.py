"""A labeler that does (almost) nothing: measures the runner around a model, and shows where rows were labeled.

    method:
      name: custom
      labeler: batchlabel.testing.noop:NoopLabeler
      options:
        sleep_s: 0.0            # extra latency per label() call (to keep a job running, e.g. to kill a node)
        record_dir: /tmp/where  # optional: one small JSON file per call {node, pid, texts} (a shared directory)

Every text gets the first label with confidence 1.0. With no options a call costs a few list allocations,
so `benchmarks/runner_ceiling.py` measures the runner's own ceiling (planning, reading, moving, writing).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import numpy as np

from batchlabel.config import JobSpec
from batchlabel.hashing import stable_hash
from batchlabel.methods.base import Labeler, LabelOutput


def _node_id() -> str:
    """The Ray node this process runs on ('' outside Ray)."""
    try:
        import ray
    except ImportError:
        return ""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


class NoopLabeler(Labeler):
    @staticmethod
    def fingerprint_for(spec: JobSpec, storage) -> str:
        return stable_hash({"noop": spec.label_names})

    def __init__(self, spec: JobSpec):
        options = spec.method.options
        self.labels = spec.label_names
        self.fingerprint = self.fingerprint_for(spec, None)
        self.sleep_s = float(options.get("sleep_s", 0.0))
        self.record_dir = Path(options["record_dir"]) if options.get("record_dir") else None
        self.node = _node_id() if self.record_dir else ""
        if self.record_dir:
            self.record_dir.mkdir(parents=True, exist_ok=True)

    def label(self, texts: list[str]) -> LabelOutput:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        n = len(texts)
        probs = np.zeros((n, len(self.labels)), dtype=np.float32)
        probs[:, 0] = 1.0
        if self.record_dir:
            record = {"node": self.node, "pid": os.getpid(), "texts": texts}
            target = self.record_dir / f"{uuid.uuid4().hex}.json"
            partial = target.with_suffix(".tmp")
            partial.write_text(json.dumps(record))
            partial.rename(target)  # readers never see half a file
        return LabelOutput(
            labels=[self.labels[0]] * n, confidence=[1.0] * n, probs=probs, errors=[None] * n, truncated=[False] * n
        )
