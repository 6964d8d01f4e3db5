"""What the remote engines (openai, together) share: a bounded thread pool of requests in flight, retries
with exponential backoff on 429/5xx/timeouts/connection errors, and per-request error reporting.

Both clients are built with ``max_retries=0``: the retries are ours, so they are counted and bounded here.
"""

from __future__ import annotations

import random
import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from batchlabel.config import OpenAIEngineSpec, TogetherEngineSpec
from batchlabel.engines.base import Constraint, Decoding, Engine, Generation, Messages
from batchlabel.io.storage import StorageSettings

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 20.0


def retryable(error: BaseException) -> bool:
    """429, 5xx, timeouts and connection errors are worth retrying; other 4xx are not.

    Both engines speak through the ``openai`` client (langchain-together is built on it), so its errors are the ones seen.
    """
    import openai

    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
        return True
    return isinstance(error, openai.APIStatusError) and error.status_code >= 500


def with_retries(call: Callable[[], Generation], retries: int, is_retryable: Callable[[BaseException], bool]) -> Generation:
    """Run ``call``; on a retryable error sleep base·2^attempt (jittered, capped) and try again."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as error:  # the engine reports failures per request, never raises
            if attempt >= retries or not is_retryable(error):
                return Generation("", 0, 0, error=f"{type(error).__name__}: {str(error)[:300]} (after {attempt + 1} tries)")
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * (0.5 + random.random() / 2)
            time.sleep(delay)
            attempt += 1


class RemoteEngine(Engine):
    """An engine that sends each prompt as one request to a server, ``concurrency`` at a time."""

    formats = ("json",)
    spec: OpenAIEngineSpec | TogetherEngineSpec

    def __init__(self, spec: OpenAIEngineSpec | TogetherEngineSpec, storage: StorageSettings):
        super().__init__(spec, storage)
        self.pool = ThreadPoolExecutor(max_workers=spec.concurrency, thread_name_prefix=f"batchlabel-{spec.name}")

    @abstractmethod
    def _one(self, messages: Messages, constraint: Constraint | None, decoding: Decoding) -> Generation:
        """One request (raises on failure; ``_generate`` retries and reports)."""

    def _generate(self, prompts: list[Messages], constraints: list[Constraint | None], decoding: Decoding) -> list[Generation]:
        def task(pair: tuple[Messages, Constraint | None]) -> Generation:
            messages, constraint = pair
            return with_retries(lambda: self._one(messages, constraint, decoding), self.spec.request_retries, retryable)

        return list(self.pool.map(task, zip(prompts, constraints)))

    def close(self) -> None:
        self.pool.shutdown(wait=False)
