"""`together` engine: langchain-together's `ChatTogether` (hosted Together AI, or any OpenAI-compatible
server through ``base_url``), with ``with_structured_output(..., include_raw=True)`` so the raw reply is
validated by our own parser (normalisation, id/count checks) and its token usage is counted (cached prompt
tokens from ``usage_metadata.input_token_details.cache_read``). Concurrency, the job-wide rate limit and
retries are the remote engines' (batchlabel.engines.remote).
"""

from __future__ import annotations

import os

from batchlabel.config import TogetherEngineSpec
from batchlabel.engines import engine_package
from batchlabel.engines.base import Constraint, Decoding, Generation, Messages
from batchlabel.engines.remote import RemoteEngine
from batchlabel.errors import BatchlabelError
from batchlabel.io.storage import StorageSettings

ROLE = {"system": "system", "user": "human", "assistant": "ai"}


class TogetherEngine(RemoteEngine):
    spec: TogetherEngineSpec

    def __init__(self, spec: TogetherEngineSpec, storage: StorageSettings):
        chat_together = engine_package("together").ChatTogether
        key = os.environ.get(spec.api_key_env)  # only the variable the spec names
        if not key and not spec.base_url:
            raise BatchlabelError(f"The together engine needs an API key in ${spec.api_key_env} (engine.api_key_env).")
        super().__init__(spec, storage, key)
        kwargs = {"base_url": spec.base_url} if spec.base_url else {}
        self._make = lambda temperature, seed, max_tokens: chat_together(
            model=spec.model,
            api_key=key or "EMPTY",
            temperature=temperature,
            timeout=spec.timeout_s,
            max_retries=0,  # ours: remote.with_retries
            seed=seed,
            max_tokens=max_tokens,
            **kwargs,
        )

    def _runnable(self, constraint: Constraint | None, decoding: Decoding):
        chat = self._make(decoding.temperature, decoding.seed, decoding.max_tokens)
        if constraint is None:
            return chat, False
        schema = {"title": constraint.name, **constraint.schema()}
        return chat.with_structured_output(schema, method="json_schema", include_raw=True), True

    def _one(self, messages: Messages, constraint: Constraint | None, decoding: Decoding) -> Generation:
        runnable, structured = self._runnable(constraint, decoding)
        reply = runnable.invoke([(ROLE[m["role"]], m["content"]) for m in messages])
        raw = reply["raw"] if structured else reply
        usage = getattr(raw, "usage_metadata", None) or {}
        text = raw.content if isinstance(raw.content, str) else str(raw.content)
        cached = (usage.get("input_token_details") or {}).get("cache_read") or 0
        return Generation(text, usage.get("input_tokens", 0), usage.get("output_tokens", 0), cached_tokens=cached)
