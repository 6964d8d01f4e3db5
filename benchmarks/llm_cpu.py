"""LLM labeling benchmark on CPU: SmolLM2-135M-Instruct on a fixed R8 test sample.

For prompt (N=1 and N=8 articles per prompt), score (full label) and first-token score, on the hf and
vllm engines, vLLM with prefix caching on and off: accuracy, macro-F1, articles/s, prompt and output
tokens per article. Labelers are driven directly (no Ray) so the numbers are the method × engine cost.
Writes JSON and a Markdown table.

    python benchmarks/llm_cpu.py --rows 64 --out benchmarks/out/llm_cpu
    (needs `batchlabel models import-gguf smollm2-135m` first)

A 135M model classifies news poorly; these numbers are about the mechanics and the engines' speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import R8_LABEL_SPECS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABELS = R8_LABEL_SPECS
NAMES = [label["name"] for label in LABELS]

CONFIGS = {
    "prompt_n1": {"name": "prompt"},
    "prompt_n8": {"name": "prompt", "items_per_prompt": 8, "max_retries": 1},
    "score_full": {"name": "score", "variant": "full", "calibrate": True},
    "score_first_token": {"name": "score", "variant": "first_token", "calibrate": True},
}


def sample(rows: int) -> tuple[list[str], list[str]]:
    """A fixed, label-stratified sample of R8 test (round-robin over labels in file order)."""
    import pyarrow.parquet as pq

    table = pq.read_table(ROOT / "data" / "reuters_r8" / "test.parquet")
    texts, golds = table.column("text").to_pylist(), table.column("label").to_pylist()
    by_label = {name: [i for i, g in enumerate(golds) if g == name] for name in NAMES}
    picked: list[int] = []
    depth = 0
    while len(picked) < rows and depth < len(golds):
        for name in NAMES:
            if depth < len(by_label[name]) and len(picked) < rows:
                picked.append(by_label[name][depth])
        depth += 1
    return [texts[i] for i in picked], [golds[i] for i in picked]


def build(method: dict, engine_spec: dict, engine):
    from batchlabel.config import parse_job
    from batchlabel.methods.prompt import PromptLabeler
    from batchlabel.methods.score import ScoreLabeler

    spec = parse_job({"input": {"path": "unused"}, "labels": LABELS, "method": {**method, "engine": engine_spec},
                      "output": {"path": "unused"}})
    return (PromptLabeler if method["name"] == "prompt" else ScoreLabeler)(spec, engine=engine)


def prompt_tokens_of_score(labeler, texts: list[str]) -> float:
    clipped, _ = labeler.engine.clip(texts, labeler.method.engine.max_article_tokens)
    examples = [[] for _ in clipped]
    ids = [labeler.engine.chat.prompt_ids(labeler.builder.single(t, e, "label")) for t, e in zip(clipped, examples)]
    return sum(len(i) for i in ids) / len(ids)


def measure(name: str, labeler, texts: list[str], golds: list[str], batch: int) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    predicted: list[str | None] = []
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        predicted.extend(labeler.label(texts[start : start + batch]).labels)
    wall = time.perf_counter() - started
    shown = [p or "<error>" for p in predicted]
    row = {
        "config": name,
        "rows": len(texts),
        "accuracy": accuracy_score(golds, shown),
        "macro_f1": f1_score(golds, shown, labels=NAMES, average="macro", zero_division=0),
        "error_rows": sum(p is None for p in predicted),
        "wall_s": wall,
        "articles_per_s": len(texts) / wall,
    }
    stats = getattr(labeler, "stats", None)
    if stats is not None:
        summary = stats.as_dict()
        row["prompt_tokens_per_article"] = summary["prompt_tokens_per_article"]
        row["output_tokens_per_article"] = summary["output_tokens_per_article"]
        row["splits"], row["reasks"] = summary["splits"], summary["reasks"]
    else:
        row["prompt_tokens_per_article"] = prompt_tokens_of_score(labeler, texts)
        row["output_tokens_per_article"] = 0.0
    return row


def run_engine(engine_name: str, model: str, prefix_caching: bool, configs: list[str], texts, golds, batch, save) -> None:
    from pydantic import TypeAdapter

    from batchlabel.config import EngineSpec
    from batchlabel.engines import build_engine
    from batchlabel.io.storage import StorageSettings

    engine_spec = {"name": engine_name, "model": model, "max_article_tokens": 256, "max_model_len": 4096}
    engine_spec.update({"prefix_caching": prefix_caching} if engine_name == "vllm" else {"batch_size": 8})
    started = time.perf_counter()
    engine = build_engine(TypeAdapter(EngineSpec).validate_python(engine_spec), StorageSettings())
    load_s = time.perf_counter() - started
    for name in configs:
        labeler = build(CONFIGS[name], engine_spec, engine)
        row = measure(name, labeler, texts, golds, batch)
        row.update(engine=engine_name, prefix_caching=prefix_caching if engine_name == "vllm" else None, load_s=load_s)
        print(json.dumps(row), flush=True)
        save(row)
    engine.close()


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# LLM labeling on CPU — {meta['model']} on {meta['rows']} R8 test rows",
        "",
        f"Machine: {meta['machine']}, torch threads {meta['threads']}. Labelers driven directly (no Ray), "
        f"{meta['batch']} articles per `label()` call.",
        "",
        "| engine | prefix cache | config | accuracy | macro-F1 | errors | articles/s | prompt tok/article | output tok/article |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cache = "" if r["prefix_caching"] is None else ("on" if r["prefix_caching"] else "off")
        lines.append(
            f"| {r['engine']} | {cache} | {r['config']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['error_rows']} | "
            f"{r['articles_per_s']:.2f} | {r['prompt_tokens_per_article']:.0f} | {r['output_tokens_per_article']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "smollm2-135m"))
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="articles per label() call")
    parser.add_argument("--engines", default="hf,vllm", help="comma list of hf, vllm")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--no-cache-off", action="store_true", help="skip the vLLM prefix-caching-off pass")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "llm_cpu"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    texts, golds = sample(args.rows)
    configs = [c for c in args.configs.split(",") if c]
    meta = {"model": Path(args.model).name, "rows": len(texts), "batch": args.batch, "threads": args.threads,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def save(row: dict) -> None:  # after every measurement, so an interrupted run keeps what it measured
        rows.append(row)
        (out / "results.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
        (out / "results.md").write_text(markdown(rows, meta))

    for engine_name in [e for e in args.engines.split(",") if e]:
        passes = [True] if engine_name == "hf" or args.no_cache_off else [True, False]
        for prefix_caching in passes:
            run_engine(engine_name, args.model, prefix_caching, configs, texts, golds, args.batch, save)
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
