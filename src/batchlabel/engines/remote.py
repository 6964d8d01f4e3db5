"""What the remote engines (openai, together) share: a bounded thread pool of requests in flight, the job-wide
rate limiter asked before every request (``engines.rate_limit``), retries on 429/5xx/timeouts/connection errors
(after the server's ``Retry-After`` when it sends one, else exponential backoff with jitter), and per-request
error reporting with the API key redacted.

Both clients are built with ``max_retries=0``: the retries are ours, so they are counted and bounded here.
A retried request counts once in the output: only the answer that succeeded carries usage.
"""

from __future__ import annotations

import random
import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from batchlabel.config import OpenAIEngineSpec, TogetherEngineSpec
from batchlabel.engines.base import (
    CHARS_PER_TOKEN,
    Constraint,
    Decoding,
    Engine,
    Generation,
    Messages,
)
from batchlabel.engines.rate_limit import Limiter, limiter_for, retry_after
from batchlabel.io.storage import StorageSettings

#: tokens a chat message adds beyond its text (role and separators), for the estimate before sending
MESSAGE_OVERHEAD_TOKENS = 4

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


def server_wait(error: BaseException) -> float | None:
    """Seconds the server asked to wait (``Retry-After`` of a 429/5xx answer), None when it did not say."""
    response = getattr(error, "response", None)
    return retry_after(getattr(response, "headers", None))


def backoff(attempt: int) -> float:
    """base·2^attempt seconds, capped, with jitter (half to all of it) so that actors do not retry in step."""
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * (0.5 + random.random() / 2)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def estimate_tokens(messages: Messages, max_tokens: int) -> int:
    """Tokens a request may cost before it is sent: its characters / CHARS_PER_TOKEN + the answer budget."""
    chars = sum(len(m["content"]) for m in messages)
    return chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS * len(messages) + max_tokens


def with_retries(
    call: Callable[[], Generation],
    retries: int,
    is_retryable: Callable[[BaseException], bool],
    limiter: Limiter | None = None,
    estimate: int = 0,
    secrets: tuple[str, ...] = (),
) -> Generation:
    """Run ``call`` once the limiter allows; on a retryable error wait the server's Retry-After (and pause the
    whole job's limiter for it) or base·2^attempt (jittered, capped), and try again. Each try is a request the
    limiter books; the token estimate is corrected with the answer's usage (0 for a refused request)."""
    attempt = 0
    while True:
        if limiter is not None:
            limiter.acquire(estimate)
        try:
            result = call()
        except Exception as error:  # the engine reports failures per request, never raises
            wait = server_wait(error)
            if limiter is not None:
                # a status answer (429, 5xx, 4xx) spent no tokens; a timeout may have: keep its estimate
                limiter.settle(estimate, 0 if getattr(error, "status_code", None) else estimate)
                if wait is not None and wait > 0:
                    limiter.pause(wait)
            if attempt >= retries or not is_retryable(error):
                reason = redact(f"{type(error).__name__}: {str(error)[:300]}", secrets)
                return Generation("", 0, 0, error=f"{reason} (after {attempt + 1} tries)")
            time.sleep(wait if wait is not None else backoff(attempt))
            attempt += 1
            continue
        if limiter is not None:
            limiter.settle(estimate, result.prompt_tokens + result.output_tokens)
        return result


class RemoteEngine(Engine):
    """An engine that sends each prompt as one request to a server, ``concurrency`` at a time."""

    formats = ("json",)
    spec: OpenAIEngineSpec | TogetherEngineSpec

    def __init__(self, spec: OpenAIEngineSpec | TogetherEngineSpec, storage: StorageSettings, api_key: str | None = None):
        super().__init__(spec, storage)
        self.pool = ThreadPoolExecutor(max_workers=spec.concurrency, thread_name_prefix=f"batchlabel-{spec.name}")
        #: never written anywhere: error texts that contain it are redacted
        self.secrets = (api_key,) if api_key else ()
        identity = {"engine": spec.name, "base_url": spec.base_url, "model": spec.model, "key": spec.api_key_env}
        self.limiter = limiter_for(spec.rate_limit, identity)

    @abstractmethod
    def _one(self, messages: Messages, constraint: Constraint | None, decoding: Decoding) -> Generation:
        """One request (raises on failure; ``_generate`` retries and reports)."""

    def _generate(self, prompts: list[Messages], constraints: list[Constraint | None], decoding: Decoding) -> list[Generation]:
        def task(pair: tuple[Messages, Constraint | None]) -> Generation:
            messages, constraint = pair
            return with_retries(
                lambda: self._one(messages, constraint, decoding), self.spec.request_retries, retryable,
                limiter=self.limiter, estimate=estimate_tokens(messages, decoding.max_tokens), secrets=self.secrets,
            )

        return list(self.pool.map(task, zip(prompts, constraints)))

    def close(self) -> None:
        self.pool.shutdown(wait=False)
