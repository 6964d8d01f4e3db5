"""Fault injection around a REAL labeler, for reliability tests and chaos drills.

Use it as a custom method; it labels exactly like the wrapped method (same fingerprint) but:

    method:
      name: custom
      labeler: batchlabel.testing.faults:FaultyLabeler
      options:
        inner: {name: embed, head: out/head}      # the real method spec
        state_dir: /tmp/faults                    # shared by all actors: makes each fault fire once
        die_on_calls: [3, 7]                      # os._exit(1) the actor process on these label() calls
        raise_on_calls: [2]                       # raise a transient RuntimeError on these calls
        poison_text: "POISON"                     # texts containing this always raise
        sleep_s: 0.0                              # extra latency per call

Calls are numbered cluster-wide (on one machine) through exclusive-create files in state_dir, so a
restarted actor does not die again on the retried batch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from batchlabel.config import JobSpec
from batchlabel.methods.base import Labeler, LabelOutput


def _inner_spec(spec: JobSpec) -> JobSpec:
    data = spec.model_dump(mode="json")
    data["method"] = spec.method.options["inner"]
    return JobSpec.model_validate(data)


class FaultyLabeler(Labeler):
    @staticmethod
    def fingerprint_for(spec: JobSpec, storage) -> str:
        from batchlabel.methods import labeler_fingerprint

        return labeler_fingerprint(_inner_spec(spec), storage)

    @staticmethod
    def preflight(spec: JobSpec, storage) -> None:
        from batchlabel.methods import preflight_method

        preflight_method(_inner_spec(spec), storage)

    def __init__(self, spec: JobSpec):
        from batchlabel.methods import build_labeler

        options = spec.method.options
        self.inner = build_labeler(_inner_spec(spec))
        self.fingerprint = self.inner.fingerprint
        self.state_dir = Path(options.get("state_dir", "/tmp/batchlabel-faults"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.die_on = set(options.get("die_on_calls", []))
        self.raise_on = set(options.get("raise_on_calls", []))
        self.poison = options.get("poison_text")
        self.sleep_s = float(options.get("sleep_s", 0.0))

    def _next_call(self) -> int:
        number = 1
        while True:
            try:
                os.close(os.open(self.state_dir / f"call-{number:06d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return number
            except FileExistsError:
                number += 1

    def label(self, texts: list[str]) -> LabelOutput:
        call = self._next_call()
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if call in self.die_on:
            (self.state_dir / f"died-{call:06d}").touch()
            os._exit(1)
        if call in self.raise_on:
            (self.state_dir / f"raised-{call:06d}").touch()
            raise RuntimeError(f"injected transient fault on call {call}")
        if self.poison and any(self.poison in text for text in texts):
            raise ValueError("injected permanent fault: poison text")
        return self.inner.label(texts)
