"""`openai` engine: any OpenAI-compatible chat endpoint (e.g. `vllm serve`), with bounded concurrency,
the job-wide rate limit, retries on 429/5xx/timeouts/connection errors (Retry-After, else backoff) and a
per-request timeout (batchlabel.engines.remote). Token usage comes from the answer's ``usage`` (cached prompt
tokens from ``usage.prompt_tokens_details.cached_tokens`` when the server reports them).

Constraints are sent as ``response_format`` JSON schema (servers that support it enforce it; the reply is
validated by the caller either way). The API key comes from the environment variable ``api_key_env``.
"""

from __future__ import annotations

import os

from batchlabel.config import OpenAIEngineSpec
from batchlabel.engines import engine_package
from batchlabel.engines.base import Constraint, Decoding, Generation, Messages
from batchlabel.engines.remote import RemoteEngine
from batchlabel.io.storage import StorageSettings


def response_format(constraint: Constraint | None) -> dict | None:
    if constraint is None:
        return None
    return {"type": "json_schema", "json_schema": {"name": constraint.name, "schema": constraint.schema(), "strict": True}}


class OpenAIEngine(RemoteEngine):
    spec: OpenAIEngineSpec

    def __init__(self, spec: OpenAIEngineSpec, storage: StorageSettings):
        openai = engine_package("openai")
        key = os.environ.get(spec.api_key_env)
        super().__init__(spec, storage, key)
        self.client = openai.OpenAI(
            base_url=spec.base_url,
            api_key=key or "EMPTY",
            timeout=spec.timeout_s,
            max_retries=0,  # retries are ours (remote.with_retries), so they are counted and bounded here
        )
        # the client imports its resources on first use: do it now, not between the limiter's send time and the send
        self.client.chat.completions  # noqa: B018

    def _one(self, messages: Messages, constraint: Constraint | None, decoding: Decoding) -> Generation:
        kwargs = {}
        fmt = response_format(constraint)
        if fmt is not None:
            kwargs["response_format"] = fmt
        if decoding.seed is not None:
            kwargs["seed"] = decoding.seed
        reply = self.client.chat.completions.create(
            model=self.spec.model,
            messages=messages,
            max_tokens=decoding.max_tokens,
            temperature=decoding.temperature,
            **kwargs,
        )
        usage = reply.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return Generation(
            reply.choices[0].message.content or "",
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            cached_tokens=(getattr(details, "cached_tokens", None) or 0) if details else 0,
        )

    def close(self) -> None:
        super().close()
        self.client.close()
