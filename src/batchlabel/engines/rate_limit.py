"""Rate limits of hosted APIs, shared by every actor of a job: token buckets and the server's ``Retry-After``.

Each bucket is a GCRA (the "virtual scheduling" form of a token bucket): it holds ``burst`` units and refills
at ``rate`` per second; a request of cost ``c`` is given the earliest send time at which every bucket can pay
for it, and pays there. So over ANY window of W seconds the requests (tokens) sent are at most
``burst + rate·W``. A request that costs more than the burst waits for a full bucket and leaves it in debt.

Send times are wall-clock (``time.time()``): the job's actors sleep until the time they were given, so the
latency of asking the shared limiter does not shift the schedule. A ``Retry-After`` answer pauses every
actor of the job until then (the server said the quota is spent, not only this request's).

Where: one Ray actor per (job, API, limits), created by the first labeling actor that needs it
(``get_if_exists``), detached so that no labeling actor owns it, and gone after ``IDLE_EXIT_S`` without
calls. Without Ray (an engine used directly) the same buckets live in the process.
(docs/design.md, "Rate limits and token accounting (hosted APIs)")
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from collections import deque
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

from batchlabel.config.engines import RateLimitSpec
from batchlabel.hashing import stable_hash

#: a Retry-After longer than this is cut to it (the request is then retried and may be told to wait again)
MAX_RETRY_AFTER_S = 120.0
#: the shared limiter actor exits after this long without a call (it is detached: nothing else stops it)
IDLE_EXIT_S = 900.0
#: send times kept for inspection (``Buckets.granted``)
GRANT_LOG = 10_000
NAMESPACE = "batchlabel"


class Bucket:
    """One GCRA bucket: ``tat`` is the time at which it is full again (theoretical arrival time)."""

    def __init__(self, per_minute: float, burst_s: float):
        self.rate = per_minute / 60.0
        self.burst = max(1.0, self.rate * burst_s)
        self.tat = 0.0

    def earliest(self, cost: float, now: float) -> float:
        """First time at which the bucket holds ``min(cost, burst)``."""
        return max(now, self.tat - (self.burst - min(cost, self.burst)) / self.rate)

    def pay(self, cost: float, at: float) -> None:
        self.tat = max(self.tat, at) + cost / self.rate

    def refund(self, amount: float) -> None:
        """Give back ``amount`` (negative: take more), e.g. estimated minus actual tokens."""
        self.tat -= amount / self.rate


class Buckets:
    """The request and token buckets of one rate-limit spec, plus the pause a Retry-After asked for."""

    def __init__(self, spec: RateLimitSpec | None):
        self.requests = Bucket(spec.requests_per_minute, spec.burst_s) if spec and spec.requests_per_minute else None
        self.tokens = Bucket(spec.tokens_per_minute, spec.burst_s) if spec and spec.tokens_per_minute else None
        self.paused_until = 0.0
        self.lock = threading.Lock()
        self.last_call = time.monotonic()
        self.grants: deque[tuple[float, str]] = deque(maxlen=GRANT_LOG)

    def reserve(self, tokens: float, now: float | None = None, caller: str = "") -> float:
        """Book one request of ``tokens`` (estimated) tokens; returns the wall-clock time to send it at."""
        with self.lock:
            self.last_call = time.monotonic()
            now = time.time() if now is None else now
            at = max(now, self.paused_until)
            if self.requests is not None:
                at = max(at, self.requests.earliest(1, now))
            if self.tokens is not None:
                at = max(at, self.tokens.earliest(tokens, now))
            if self.requests is not None:
                self.requests.pay(1, at)
            if self.tokens is not None:
                self.tokens.pay(tokens, at)
            self.grants.append((at, caller))
            return at

    def granted(self) -> list[tuple[float, str]]:
        """(send time, caller) of the requests booked so far (the last ``GRANT_LOG``), to check it from outside."""
        with self.lock:
            return list(self.grants)

    def settle(self, estimate: float, actual: float) -> None:
        """Correct a booking with the tokens the answer reported (0 when the server refused the request)."""
        with self.lock:
            self.last_call = time.monotonic()
            if self.tokens is not None:
                self.tokens.refund(estimate - actual)

    def pause(self, until: float) -> None:
        """Send nothing before wall-clock time ``until`` (a Retry-After)."""
        with self.lock:
            self.last_call = time.monotonic()
            self.paused_until = max(self.paused_until, until)


class Limiter:
    """What a remote engine asks before each request: ``acquire`` (blocks until the send time), ``settle``
    and ``pause``. This one keeps the buckets in the process."""

    def __init__(self, spec: RateLimitSpec | None):
        self.buckets = Buckets(spec)

    def _reserve(self, tokens: float) -> float:
        return self.buckets.reserve(tokens)

    def acquire(self, tokens: float) -> None:
        wait = self._reserve(tokens) - time.time()
        if wait > 0:
            time.sleep(wait)

    def settle(self, estimate: float, actual: float) -> None:
        self.buckets.settle(estimate, actual)

    def pause(self, seconds: float) -> None:
        self.buckets.pause(time.time() + seconds)


class SharedBuckets(Buckets):
    """The Ray actor's state (the class is wrapped with ``ray.remote`` where it is created)."""

    def __init__(self, spec_json: str, idle_exit_s: float):
        super().__init__(RateLimitSpec.model_validate_json(spec_json))
        self.idle_exit_s = idle_exit_s
        threading.Thread(target=self._exit_when_idle, daemon=True).start()

    def _exit_when_idle(self) -> None:
        import ray

        while time.monotonic() - self.last_call < self.idle_exit_s:
            time.sleep(min(30.0, self.idle_exit_s / 4))
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


class RayLimiter(Limiter):
    """A ``Limiter`` whose buckets live in the job's shared Ray actor (all actors of the job use one)."""

    def __init__(self, spec: RateLimitSpec, name: str):
        self.spec = spec
        self.name = name
        self.handle = self._lookup()

    def _lookup(self):
        import ray

        actor = ray.remote(num_cpus=0, max_restarts=0)(SharedBuckets)
        return actor.options(
            name=self.name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_concurrency=64
        ).remote(self.spec.model_dump_json(), IDLE_EXIT_S)

    def _reserve(self, tokens: float) -> float:
        import ray

        caller = f"{socket.gethostname()}:{os.getpid()}"
        try:
            return ray.get(self.handle.reserve.remote(tokens, caller=caller))
        except ray.exceptions.RayActorError:  # exited after a long idle spell: make (or find) a new one
            self.handle = self._lookup()
            return ray.get(self.handle.reserve.remote(tokens, caller=caller))

    def settle(self, estimate: float, actual: float) -> None:
        self.handle.settle.remote(estimate, actual)

    def pause(self, seconds: float) -> None:
        self.handle.pause.remote(time.time() + seconds)


def limiter_for(spec: RateLimitSpec | None, identity: Mapping[str, Any]) -> Limiter:
    """The job-wide limiter when Ray runs here (all actors of this Ray job that share ``identity`` and the
    limits use one), else an in-process one. Without limits: in-process, only for Retry-After pauses."""
    if spec is None or (spec.requests_per_minute is None and spec.tokens_per_minute is None):
        return Limiter(None)
    ray = sys.modules.get("ray")  # never import Ray for an engine used without it
    if ray is None or not ray.is_initialized():
        return Limiter(spec)
    job = ray.get_runtime_context().get_job_id()
    return RayLimiter(spec, f"batchlabel-rate-limit-{job}-{stable_hash({**identity, 'limit': spec.model_dump()})}")


def retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds the server asks to wait: ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date;
    None when it gives none (or an unreadable one). Capped at ``MAX_RETRY_AFTER_S``."""
    if not headers:
        return None
    raw_ms, raw = headers.get("retry-after-ms"), headers.get("retry-after")
    seconds = _number(raw_ms)
    seconds = seconds / 1000.0 if seconds is not None else _number(raw)
    if seconds is None and raw:
        try:
            seconds = parsedate_to_datetime(raw).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError):  # e.g. "Wed, 21 Oct 2015 07:28:00 GMT" is fine, "soon" is not
            return None
    if seconds is None:
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
