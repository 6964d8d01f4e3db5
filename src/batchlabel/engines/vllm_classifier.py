"""vLLM backend of the `classifier` method: a trained sequence classifier on vLLM's pooling runner.

vLLM serves `*ForSequenceClassification` checkpoints (Llama-family via its seq-cls adapter: last-token
pooling + softmax, as transformers does with right padding; BERT/RoBERTa natively). A LoRA adapter is
merged into its base in the actor and saved once to a private temporary directory that vLLM loads — for
one adapter per job merged weights are the fast path (on CPU, `LoRARequest` was ≈7× slower than merged
weights for generation: benchmarks/vllm_lora_vs_merged.py); the directory is removed as soon as vLLM has
loaded it. Texts arrive as token ids, tokenised and
truncated exactly as in training, so vLLM sees the same tokens as the hf engine.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import numpy as np

from batchlabel.engines import sampling
from batchlabel.errors import BatchlabelError


class VLLMClassifier:
    """``probabilities(token_ids)`` → (n, n_labels) softmax probabilities from ``vllm.LLM.classify``."""

    def __init__(self, model: Any, tokenizer: Any, n_labels: int, max_length: int, dtype: str, seed: int = 0,
                 gpu_memory_utilization: float = 0.85):
        from batchlabel.engines.vllm_engine import import_vllm

        vllm, on_gpu = import_vllm()
        self.directory = tempfile.mkdtemp(prefix="batchlabel-vllm-classifier-")
        model.save_pretrained(self.directory, safe_serialization=True)
        tokenizer.save_pretrained(self.directory)
        self.n_labels = n_labels
        kwargs: dict[str, Any] = {
            "model": self.directory,
            "runner": "pooling",
            "dtype": dtype,
            "max_model_len": max(64, max_length),
            "enable_prefix_caching": False,
            "seed": seed,
            **sampling.device_kwargs(on_gpu, gpu_memory_utilization),
        }
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as err:
            self.close()
            raise BatchlabelError(
                f"vLLM could not load the classifier ({type(err).__name__}: {str(err)[:300]}); "
                "use method.engine: hf for this architecture."
            ) from err
        if "classify" not in self.llm.supported_tasks:
            self.close()
            raise BatchlabelError(
                f"vLLM does not run this model as a classifier (tasks: {self.llm.supported_tasks}); use engine: hf."
            )
        shutil.rmtree(self.directory, ignore_errors=True)  # weights and tokenizer are loaded: nothing left behind

    def probabilities(self, token_ids: list[list[int]]) -> np.ndarray:
        from vllm.inputs import TokensPrompt

        if not token_ids:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        outputs = self.llm.classify([TokensPrompt(prompt_token_ids=ids) for ids in token_ids], use_tqdm=False)
        probs = np.asarray([output.outputs.probs for output in outputs], dtype=np.float32)
        if probs.shape != (len(token_ids), self.n_labels):
            raise BatchlabelError(f"vLLM returned class scores of shape {probs.shape}, expected "
                                  f"({len(token_ids)}, {self.n_labels}).")
        return probs

    def close(self) -> None:
        self.__dict__.pop("llm", None)
        shutil.rmtree(self.directory, ignore_errors=True)
