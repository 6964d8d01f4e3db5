"""The engine interface shared by hf, vllm, openai and together, plus the chat-tokenizer helper of local engines
(their shared plumbing is in ``engines.local``; the remote engines' in ``engines.remote``)."""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from batchlabel.config import EngineSpec
from batchlabel.errors import BatchlabelError
from batchlabel.io.storage import StorageSettings, is_remote, local_model_dir

Messages = list[dict[str, str]]

#: characters per token assumed where no tokenizer is at hand (remote engines clip articles by characters)
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Constraint:
    """What the answer must look like: one of ``choice`` (exact strings) or a JSON schema."""

    choice: tuple[str, ...] | None = None
    json_schema: str | None = None  # JSON text of the schema (hashable, cacheable)
    name: str = "answer"

    def schema(self) -> dict:
        return json.loads(self.json_schema) if self.json_schema else {}


@dataclass(frozen=True)
class Decoding:
    """How one ``generate`` call decodes: answer token budget, temperature (0 = greedy) and sampling seed."""

    max_tokens: int
    temperature: float = 0.0
    seed: int | None = None


@dataclass
class Generation:
    """One answer: its text, token counts and (when the engine gives it) the answer's log-probability.

    ``cached_tokens``: the part of ``prompt_tokens`` the server (or vLLM) answered from its prefix cache, where
    it says so."""

    text: str
    prompt_tokens: int
    output_tokens: int
    logprob: float | None = None
    error: str | None = None
    cached_tokens: int = 0


@dataclass(frozen=True)
class TokenUsage:
    """Tokens an engine spent: prompt (cached ones included), cached prompt, output."""

    prompt: int = 0
    cached: int = 0
    output: int = 0

    def __sub__(self, other: "TokenUsage") -> "TokenUsage":
        return TokenUsage(self.prompt - other.prompt, self.cached - other.cached, self.output - other.output)


@dataclass
class UsageMeter:
    """Running token totals of one engine (thread-safe). Every answered request counts once, re-asks included;
    a request that failed counts nothing (the server reports no usage for it)."""

    total: TokenUsage = TokenUsage()
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, prompt: int = 0, cached: int = 0, output: int = 0) -> None:
        with self.lock:
            t = self.total
            self.total = TokenUsage(t.prompt + int(prompt), t.cached + int(cached), t.output + int(output))

    def snapshot(self) -> TokenUsage:
        with self.lock:
            return self.total


def resolve_model(reference: str, storage: StorageSettings) -> str:
    """Local directory (s3:// prefixes are downloaded to the cache) or a hub id, for ``from_pretrained``/vLLM."""
    if is_remote(reference):
        return local_model_dir(reference, storage)
    path = Path(reference).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BatchlabelError(
                f"Model directory {reference} has no config.json. Convert GGUF models first with "
                "`batchlabel models import-gguf` (see README)."
            )
        return str(path.absolute())
    if reference.startswith((".", "/", "~")) or reference.count("/") != 1:
        raise BatchlabelError(
            f"Model {reference} does not exist: give a local HF directory, an s3:// prefix or a hub id "
            "(org/name). `batchlabel models import-gguf` creates models/smollm2-135m."
        )
    return reference


def model_identity(reference: str) -> dict:
    """What identifies a model for fingerprints, cheaply (no download): the reference and its local config."""
    identity: dict = {"model": reference}
    path = Path(reference).expanduser()
    if not is_remote(reference) and (path / "config.json").is_file():
        identity["config"] = json.loads((path / "config.json").read_text())
        weights = sorted(path.glob("*.safetensors"))
        identity["weights"] = [(w.name, w.stat().st_size) for w in weights]
    return identity


class Engine(ABC):
    """Runs an LLM: chat generation with optional constraints, and (local engines) label log-probabilities."""

    #: answer formats this engine can enforce: "choice" (bare label) and/or "json"
    formats: tuple[str, ...] = ("json",)
    #: whether score_labels is available
    can_score: bool = False

    def __init__(self, spec: EngineSpec, storage: StorageSettings):
        self.spec = spec
        self.storage = storage
        #: tokens spent so far (generate counts its answers; score_labels implementations add their own)
        self.usage = UsageMeter()

    def generate(
        self,
        prompts: list[Messages],
        constraints: list[Constraint | None],
        max_tokens: int,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[Generation]:
        """Answer each chat prompt. Failures of one request are reported in ``Generation.error``."""
        results = self._generate(prompts, constraints, Decoding(max_tokens, temperature, seed))
        for result in results:
            if result.error is None:  # an errored prompt was not run (or the server reported no usage)
                self.usage.add(result.prompt_tokens, result.cached_tokens, result.output_tokens)
        return results

    @abstractmethod
    def _generate(self, prompts: list[Messages], constraints: list[Constraint | None], decoding: Decoding) -> list[Generation]:
        """``generate`` of this engine (one Generation per prompt, in order)."""

    def score_labels(self, prompts: list[Messages], labels: list[str], first_token: bool = False) -> np.ndarray:
        """(n, n_labels) log-probabilities of each label as the assistant's answer."""
        raise BatchlabelError(f"The {self.spec.name} engine cannot score labels (it gives no prompt log-probabilities).")

    def clip(self, texts: list[str], max_tokens: int) -> tuple[list[str], list[bool]]:
        """Cut each text to ``max_tokens`` (by characters here; local engines use their tokenizer)."""
        cap = max_tokens * CHARS_PER_TOKEN
        return [t[:cap] for t in texts], [len(t) > cap for t in texts]

    def close(self) -> None:
        """Release the model (optional)."""


class ChatTokenizer:
    """Chat-template rendering and tokenisation for local engines (hf, vllm)."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.eos_ids = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        self._continuations: dict[str, list[int]] = {}

    def render(self, messages: Messages, answer: str | None = None) -> str:
        """The prompt text (ending where the assistant answer starts), or prompt + answer when given."""
        if self.has_template:
            if answer is None:
                return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self.tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": answer}], tokenize=False
            )
        # base models without a chat template: a plain transcript
        lines = []
        for message in messages:
            role = message["role"]
            prefix = "" if role == "system" else ("Input: " if role == "user" else "Answer: ")
            lines.append(prefix + message["content"])
        text = "\n\n".join(lines) + "\n\nAnswer:"
        return text if answer is None else f"{text} {answer}\n"

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, messages: Messages) -> list[int]:
        text = self.render(messages)
        ids = self.encode(text)
        bos = self.tokenizer.bos_token_id
        if not self.has_template and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def continuation_ids(self, label: str) -> list[int]:
        """Tokens of ``label`` as the whole assistant answer (with the end-of-turn marker when there is one)."""
        if label not in self._continuations:
            probe: Messages = [{"role": "user", "content": "x"}]
            prompt = self.render(probe)
            full = self.render(probe, answer=label)
            if not full.startswith(prompt):
                raise BatchlabelError("The model's chat template does not render an answer after the prompt.")
            self._continuations[label] = self.encode(full[len(prompt) :].rstrip("\n") if not self.has_template else full[len(prompt) :])
        return self._continuations[label]

    def clip(self, texts: list[str], max_tokens: int) -> tuple[list[str], list[bool]]:
        """Cut each text to ``max_tokens`` tokens: one batched tokenizer call, one batched decode of the cut ones."""
        if not texts:
            return [], []
        cap = max_tokens * 16
        encoded = self.tokenizer([text[:cap] for text in texts], add_special_tokens=False)["input_ids"]
        flags = [len(ids) > max_tokens or len(text) > cap for ids, text in zip(encoded, texts)]
        cut = iter(self.tokenizer.batch_decode([ids[:max_tokens] for ids, flag in zip(encoded, flags) if flag]))
        return [next(cut) if flag else text for text, flag in zip(texts, flags)], flags


def first_token_ids(chat: ChatTokenizer, labels: list[str]) -> list[int]:
    """First answer token of each label; distinct, or first-token scoring cannot tell labels apart."""
    firsts = [chat.continuation_ids(label)[0] for label in labels]
    if len(set(firsts)) != len(firsts):
        clash = [labels[i] for i, t in enumerate(firsts) if firsts.count(t) > 1]
        raise BatchlabelError(
            f"Labels {clash} start with the same token, so first-token scoring cannot tell them apart; "
            "use variant: full, or add distinct aliases."
        )
    return firsts
