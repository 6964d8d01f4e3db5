"""What the local engines (hf, vllm) share: the model directory, the chat tokenizer that renders and clips
prompts (so both engines see the same token ids), and the prompt-length check against ``max_model_len``."""

from __future__ import annotations

from batchlabel.config import HFEngineSpec, VLLMEngineSpec
from batchlabel.engines.base import ChatTokenizer, Engine, Generation, Messages, resolve_model
from batchlabel.io.storage import StorageSettings


class LocalEngine(Engine):
    """An engine that holds the model in this process and tokenises prompts itself."""

    can_score = True
    spec: HFEngineSpec | VLLMEngineSpec

    def __init__(self, spec: HFEngineSpec | VLLMEngineSpec, storage: StorageSettings):
        super().__init__(spec, storage)
        self.path = resolve_model(spec.model, storage)
        self.chat = ChatTokenizer(self.path)

    def clip(self, texts: list[str], max_tokens: int) -> tuple[list[str], list[bool]]:
        return self.chat.clip(texts, max_tokens)

    def prompt_rows(self, prompts: list[Messages], max_tokens: int) -> tuple[list[list[int]], list[Generation], list[int]]:
        """Token ids of each prompt, a result per prompt (an error until answered: the prompt is too long) and
        the indices of the prompts that fit, leaving ``max_tokens`` of ``max_model_len`` for the answer."""
        rows = [self.chat.prompt_ids(m) for m in prompts]
        limit = self.spec.max_model_len - max_tokens
        out = [
            Generation("", len(r), 0, error=f"prompt of {len(r)} tokens exceeds max_model_len - max_tokens ({limit})")
            for r in rows
        ]
        keep = [i for i, r in enumerate(rows) if len(r) <= limit]
        return rows, out, keep
