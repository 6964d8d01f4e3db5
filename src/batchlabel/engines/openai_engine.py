"""`openai` engine: any OpenAI-compatible chat endpoint (e.g. `vllm serve`), with bounded concurrency,
retries with exponential backoff on 429/5xx/timeouts/connection errors, and a per-request timeout.

Constraints are sent as ``response_format`` JSON schema (servers that support it enforce it; the reply is
validated by the caller either way). The API key comes from the environment variable ``api_key_env``.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from batchlabel.engines.base import Constraint, Engine, Generation, Messages
from batchlabel.spec import EngineSpec
from batchlabel.storage import StorageSettings

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 20.0


def response_format(constraint: Constraint | None) -> dict | None:
    if constraint is None:
        return None
    return {"type": "json_schema", "json_schema": {"name": constraint.name, "schema": constraint.schema(), "strict": True}}


def retryable(error: BaseException) -> bool:
    """429, 5xx, timeouts and connection errors are worth retrying; other 4xx are not."""
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


class OpenAIEngine(Engine):
    formats = ("json",)

    def __init__(self, spec: EngineSpec, storage: StorageSettings):
        super().__init__(spec, storage)
        import openai

        self.client = openai.OpenAI(
            base_url=spec.base_url,
            api_key=os.environ.get(spec.api_key_env) or "EMPTY",
            timeout=spec.timeout_s,
            max_retries=0,  # retries are ours (with_retries), so they are counted and bounded here
        )
        self.pool = ThreadPoolExecutor(max_workers=spec.concurrency, thread_name_prefix="batchlabel-openai")

    def _one(self, messages: Messages, constraint: Constraint | None, max_tokens: int, temperature: float, seed) -> Generation:
        kwargs = {}
        fmt = response_format(constraint)
        if fmt is not None:
            kwargs["response_format"] = fmt
        if seed is not None:
            kwargs["seed"] = seed
        reply = self.client.chat.completions.create(
            model=self.spec.model, messages=messages, max_tokens=max_tokens, temperature=temperature, **kwargs
        )
        usage = reply.usage
        return Generation(
            reply.choices[0].message.content or "",
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
        )

    def generate(
        self,
        prompts: list[Messages],
        constraints: list[Constraint | None],
        max_tokens: int,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[Generation]:
        def task(pair):
            messages, constraint = pair
            return with_retries(
                lambda: self._one(messages, constraint, max_tokens, temperature, seed), self.spec.request_retries, retryable
            )

        return list(self.pool.map(task, zip(prompts, constraints)))

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.client.close()
