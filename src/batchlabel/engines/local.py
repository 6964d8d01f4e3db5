"""What the local engines (hf, vllm) share: the model directory, the chat tokenizer that renders and clips
prompts (so both engines see the same token ids), and the prompt-length check against ``max_model_len``."""

from __future__ import annotations

from batchlabel.config import HFEngineSpec, VLLMEngineSpec
from batchlabel.engines.base import ChatTokenizer, Engine, Generation, Messages, resolve_model
from batchlabel.errors import BatchlabelError
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

    def label_lengths(self, labels: list[str]) -> list[int]:
        """How many leading tokens of each label's continuation are the label itself (the rest is the chat
        template's end of turn). ``label`` scoring sums only those; it refuses labels whose own tokens are a
        prefix of another label's (their scores could not tell them apart without the end of turn)."""
        own = []
        for label in labels:
            cont, ids = self.chat.continuation_ids(label), self.chat.encode(label)
            own.append(len(ids) if cont[: len(ids)] == ids else len(cont))
        seqs = [tuple(self.chat.continuation_ids(label)[:n]) for label, n in zip(labels, own)]
        for i, a in enumerate(seqs):
            for j, b in enumerate(seqs):
                if i != j and b[: len(a)] == a:
                    raise BatchlabelError(
                        f"Label {labels[i]!r} is a token prefix of {labels[j]!r}: variant label cannot tell them "
                        "apart; use variant full."
                    )
        return own

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
