"""`together` engine: langchain-together's `ChatTogether` (hosted Together AI, or any OpenAI-compatible
server through ``base_url``), with ``with_structured_output(..., include_raw=True)`` so the raw reply is
validated by our own parser (normalisation, id/count checks) and its token usage is counted.
"""

from __future__ import annotations

import os

from batchlabel.engines.base import Constraint, Engine, Generation, Messages
from batchlabel.engines.openai_engine import retryable, with_retries
from batchlabel.errors import BatchlabelError
from batchlabel.spec import EngineSpec
from batchlabel.storage import StorageSettings

ROLE = {"system": "system", "user": "human", "assistant": "ai"}


class TogetherEngine(Engine):
    formats = ("json",)

    def __init__(self, spec: EngineSpec, storage: StorageSettings):
        super().__init__(spec, storage)
        try:
            from langchain_together import ChatTogether
        except ImportError:
            raise BatchlabelError("The together engine needs langchain-together: pip install 'batchlabel[together]'.") from None
        key = os.environ.get(spec.api_key_env) or os.environ.get("TOGETHER_API_KEY")
        if not key and not spec.base_url:
            raise BatchlabelError(f"The together engine needs an API key in ${spec.api_key_env} or $TOGETHER_API_KEY.")
        kwargs = {"base_url": spec.base_url} if spec.base_url else {}
        self._make = lambda temperature, seed, max_tokens: ChatTogether(
            model=spec.model,
            api_key=key or "EMPTY",
            temperature=temperature,
            timeout=spec.timeout_s,
            max_retries=0,  # ours: with_retries
            seed=seed,
            max_tokens=max_tokens,
            **kwargs,
        )

    def _runnable(self, constraint: Constraint | None, max_tokens: int, temperature: float, seed):
        chat = self._make(temperature, seed, max_tokens)
        if constraint is None:
            return chat, False
        schema = {"title": constraint.name, **constraint.schema()}
        return chat.with_structured_output(schema, method="json_schema", include_raw=True), True

    def generate(
        self,
        prompts: list[Messages],
        constraints: list[Constraint | None],
        max_tokens: int,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[Generation]:
        def one(messages: Messages, constraint: Constraint | None) -> Generation:
            runnable, structured = self._runnable(constraint, max_tokens, temperature, seed)
            reply = runnable.invoke([(ROLE[m["role"]], m["content"]) for m in messages])
            raw = reply["raw"] if structured else reply
            usage = getattr(raw, "usage_metadata", None) or {}
            text = raw.content if isinstance(raw.content, str) else str(raw.content)
            return Generation(text, usage.get("input_tokens", 0), usage.get("output_tokens", 0))

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.spec.concurrency) as pool:
            return list(
                pool.map(
                    lambda pair: with_retries(lambda: one(*pair), self.spec.request_retries, retryable),
                    zip(prompts, constraints),
                )
            )
