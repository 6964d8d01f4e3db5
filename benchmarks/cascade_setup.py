"""Corpora and expensive-stage presets of benchmarks/cascade.py (kept apart so cascade.py stays one concern).

R8: the shipped test and train splits. Tweets: data/vader_tweets/all.parquet has no split, so a fixed one is made
once per work directory: every 5th row of a seeded permutation is test (840 rows), the rest train (3,360), the
test rows kept in that permuted order (so `--limit N` takes a label mix close to the whole file's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from common import R8_LABEL_SPECS_DETAILED, R8_LABELS, R8_TEST, R8_TRAIN, TWEET_LABEL_SPECS, TWEETS
QWEN = "models/qwen2.5-coder-1.5b"


def corpus_paths(corpus: str, work: Path) -> tuple[Path, Path]:
    """(test, train) parquet paths of a corpus; the tweets split is written under ``work`` on first use."""
    if corpus == "r8":
        return R8_TEST, R8_TRAIN
    test, train = work / "tweets_test.parquet", work / "tweets_train.parquet"
    if not test.exists():
        table = pq.read_table(TWEETS, columns=["id", "text", "label"])
        order = np.random.default_rng(7).permutation(table.num_rows)
        pq.write_table(table.take(order[::5]), test)
        pq.write_table(table.take(np.setdiff1d(np.arange(table.num_rows), order[::5])), train)
    return test, train


def labels(corpus: str, described: bool = False) -> list:
    """Label names (the encoder stages need no descriptions), or label specs with descriptions for an LLM."""
    if corpus == "r8":
        return R8_LABEL_SPECS_DETAILED if described else R8_LABELS
    return TWEET_LABEL_SPECS if described else [lab["name"] for lab in TWEET_LABEL_SPECS]


def llm_method(preset: str, corpus: str, train: Path) -> dict:
    """The expensive stage: SmolLM2-135M calibrated label scoring (fast, weak), or Qwen2.5-Coder-1.5B prompted with
    few-shot examples from the train split on vLLM (benchmarks/results/llm_quality.md's best configuration)."""
    if preset == "smollm2_score":
        return {"name": "score", "engine": {"name": "hf", "model": "models/smollm2-135m", "max_article_tokens": 256,
                                            "batch_size": 8}, "variant": "full", "calibrate": True}
    strategy = {"qwen_fewshot_nearest": "nearest", "qwen_fewshot_stratified": "stratified"}[preset]
    few_shot = {"strategy": strategy, "k": 4 if strategy == "nearest" else (8 if corpus == "r8" else 6),
                "max_example_tokens": 64, "source": {"path": str(train)}}
    return {"name": "prompt", "engine": {"name": "vllm", "model": QWEN, "max_model_len": 4096, "prefix_caching": True,
                                         "max_article_tokens": 128 if corpus == "r8" else 96}, "few_shot": few_shot}


LLM_PRESETS = ("smollm2_score", "qwen_fewshot_stratified", "qwen_fewshot_nearest")
