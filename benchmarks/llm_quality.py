"""LLM label quality on CPU: one row per labeler (prompt N=1/8/16, few-shot, score raw/calibrated, embed head)
on fixed stratified samples of R8 test and the VADER tweets, with a 95% interval on every accuracy.

Each configuration runs in its own call and caches its result JSON (resumable: done ones are skipped), so
the measurement can be split into locked chunks of a few minutes on the shared 2 cores:

    flock /work/cpu.lock python benchmarks/llm_quality.py --corpus r8 --configs prompt_n1
    flock /work/cpu.lock python benchmarks/llm_quality.py --corpus r8 --configs prompt_n8,score_full
    python benchmarks/llm_quality.py --report          # benchmarks/results/llm_quality.{json,md}
    python benchmarks/llm_quality.py --smoke --model <tiny model dir> --out-dir <tmp>

Model: `batchlabel models import-gguf qwen2.5-coder-1.5b` (models/qwen2.5-coder-1.5b). Labelers are driven
directly (no Ray), so the numbers are the method x engine cost. Prompt rows use the vllm engine (prefix caching
on); score rows the hf engine (prompt once, label continuations on its KV cache); each row says which.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import R8_LABEL_SPECS, R8_LABEL_SPECS_DETAILED, RESULTS, TWEET_LABEL_SPECS, TWEETS  # noqa: E402
from llm_quality_metrics import scored  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPORA = {
    "r8": {
        "test": ROOT / "data" / "reuters_r8" / "test.parquet",
        "pool": ROOT / "data" / "reuters_r8" / "train.parquet",
        "labels": R8_LABEL_SPECS_DETAILED,
        "labels_short": R8_LABEL_SPECS,
        "max_article_tokens": 128,
        "k": 8,
    },
    "tweets": {
        "test": TWEETS,
        "pool": None,  # examples come from the rows of the same file that are not in the sample
        "labels": TWEET_LABEL_SPECS,
        "max_article_tokens": 96,
        "k": 6,
    },
}
# in priority order (the order a time-boxed run should take them)
# (`<config>_short`: the same with the corpus's one-line label descriptions, where it has them)
CONFIGS = {
    "prompt_n1": ("vllm", {"name": "prompt"}),
    "prompt_n8": ("vllm", {"name": "prompt", "items_per_prompt": 8, "max_retries": 1}),
    # one hf pass scores full, label-only and first-token, each raw and calibrated (six rows)
    "score": ("hf", {"name": "score", "variant": "full", "calibrate": True}),
    "fewshot_stratified": ("vllm", {"name": "prompt", "few_shot": {"strategy": "stratified"}}),
    "prompt_n16": ("vllm", {"name": "prompt", "items_per_prompt": 16, "max_retries": 1}),
    "fewshot_nearest": ("vllm", {"name": "prompt", "few_shot": {"strategy": "nearest", "k": 4}}),
    "fewshot_stratified_n8": ("vllm", {"name": "prompt", "items_per_prompt": 8, "max_retries": 1,
                                       "few_shot": {"strategy": "stratified"}}),
    # score on vllm: first_token only (one cached generation step per article; the other variants bypass the
    # prefix cache there), raw; zero-shot (vs the hf pass above) and with the stratified examples
    "score_vllm": ("vllm", {"name": "score", "variant": "first_token", "calibrate": False}),
    "score_fewshot_stratified": ("vllm", {"name": "score", "variant": "first_token", "calibrate": False,
                                          "few_shot": {"strategy": "stratified"}}),
    "score_fewshot_nearest": ("vllm", {"name": "score", "variant": "first_token", "calibrate": False,
                                       "few_shot": {"strategy": "nearest", "k": 4}}),
    "embed_head": ("embed", {}),
}
SEED = 13


def sample(corpus: str, rows: int, out: Path) -> tuple[list[str], list[str], Path]:
    """A fixed stratified sample (round-robin over labels, each label's rows in a seeded order) and the
    parquet of labeled examples that few-shot and the embed head may use (never a sampled row)."""
    import numpy as np
    import pyarrow.parquet as pq

    info = CORPORA[corpus]
    table = pq.read_table(info["test"], columns=["id", "text", "label"])
    golds = table.column("label").to_pylist()
    rng = np.random.default_rng(SEED)
    by_label = {lab["name"]: list(rng.permutation([i for i, g in enumerate(golds) if g == lab["name"]])) for lab in info["labels"]}
    picked: list[int] = []
    depth = 0
    while len(picked) < rows and any(depth < len(v) for v in by_label.values()):
        for ids in by_label.values():
            if depth < len(ids) and len(picked) < rows:
                picked.append(int(ids[depth]))
        depth += 1
    pool = info["pool"]
    if pool is None:
        keep = np.ones(table.num_rows, dtype=bool)
        keep[picked] = False
        pool = out / f"{corpus}_pool.parquet"
        if not pool.exists():
            pq.write_table(table.filter(keep), pool)
    texts = table.column("text").to_pylist()
    return [texts[i] for i in picked], [golds[i] for i in picked], pool


def config_parts(corpus: str, config: str) -> tuple[str, dict, list[dict]]:
    """(engine kind, method, labels) of a configuration name; a `_short` suffix picks the short descriptions."""
    info = CORPORA[corpus]
    base = config.removesuffix("_short")
    kind, method = CONFIGS[base]
    return kind, method, info["labels_short"] if base != config else info["labels"]


def build_labeler(corpus: str, method: dict, labels: list[dict], engine_spec: dict, pool: Path, engine):
    from batchlabel.config import parse_job
    from batchlabel.methods.prompt import PromptLabeler
    from batchlabel.methods.score import ScoreLabeler

    info = CORPORA[corpus]
    method = json.loads(json.dumps(method))
    if "few_shot" in method:
        method["few_shot"] = {"k": info["k"], "max_example_tokens": 64, "source": {"path": str(pool)}, **method["few_shot"]}
    spec = parse_job({"input": {"path": "unused"}, "labels": labels, "method": {**method, "engine": engine_spec},
                      "output": {"path": "unused"}})
    return (PromptLabeler if method["name"] == "prompt" else ScoreLabeler)(spec, engine=engine)


def engine_for(kind: str, model: str, corpus: str):
    from pydantic import TypeAdapter

    from batchlabel.config import EngineSpec
    from batchlabel.engines import build_engine
    from batchlabel.io.storage import StorageSettings

    spec = {"name": kind, "model": model, "max_article_tokens": CORPORA[corpus]["max_article_tokens"], "max_model_len": 4096}
    spec.update({"prefix_caching": True} if kind == "vllm" else {"batch_size": 4})
    started = time.perf_counter()
    engine = build_engine(TypeAdapter(EngineSpec).validate_python(spec), StorageSettings())
    return spec, engine, time.perf_counter() - started


class Partial:
    """Per-batch progress of one configuration, so a chunk that runs out of its time budget resumes later."""

    deadline = float("inf")

    def __init__(self, path: Path):
        self.path = path
        self.state = json.loads(path.read_text()) if path.exists() else {}

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def save(self, state: dict) -> None:
        self.path.write_text(json.dumps(state))


def run_llm(corpus: str, config: str, model: str, texts, golds, pool: Path, batch: int, prompt_engine: str,
            work: Path, engines: dict) -> dict:
    """One configuration; ``engines`` holds the engines loaded so far in this process (one model load per engine
    kind for all the configurations of a call: loading the 1.5B fp32 weights takes ~2 min here)."""
    kind, method, labels_spec = config_parts(corpus, config)
    kind = prompt_engine if kind == "vllm" else kind
    if kind not in engines:
        engines[kind] = engine_for(kind, model, corpus)
    engine_spec, engine, load_s = engines[kind]
    labeler = build_labeler(corpus, method, labels_spec, engine_spec, pool, engine)
    names = labeler.names
    if method["name"] == "score" and kind == "hf":
        rows = run_score(labeler, engine, engine_spec, texts, golds, batch, Partial(work / f"{corpus}_{config}.partial.json"),
                         config.removeprefix("score"))
        return {k: {**v, "load_s": round(load_s, 1)} for k, v in rows.items()}
    partial = Partial(work / f"{corpus}_{config}.partial.json")
    labels, confidence, wall = partial.state.get("labels", []), partial.state.get("confidence", []), partial.state.get("wall", 0.0)
    stats = getattr(labeler, "stats", None)  # prompt labelers count prompts, splits, re-asks; score: tokens only
    tokens = partial.state.get("tokens", 0)
    for key, value in partial.state.get("stats", {}).items():
        setattr(stats, key, value)
    for start in range(len(labels), len(texts), batch):
        if partial.out_of_time():
            return {}
        started, before = time.perf_counter(), engine.usage.snapshot().prompt
        out = labeler.label(texts[start : start + batch])
        labels, confidence, wall = labels + out.labels, confidence + out.confidence, wall + time.perf_counter() - started
        tokens += engine.usage.snapshot().prompt - before
        partial.save({"labels": labels, "confidence": confidence, "wall": wall, "stats": vars(stats) if stats else {},
                      "tokens": tokens, "engine": kind,
                      "load": [partial.state.get("load", [round(os.getloadavg()[0], 2)])[0], round(os.getloadavg()[0], 2)]})
        partial.state.setdefault("load", [round(os.getloadavg()[0], 2)])
    summary = stats.as_dict() if stats else {"prompt_tokens_per_article": tokens / len(texts),
                                             "output_tokens_per_article": 0.0, "splits": 0, "reasks": 0}
    row = {"engine": kind + (" (prefix caching)" if kind == "vllm" else ""), "load_s": round(load_s, 1), "wall_s": wall,
           "articles_per_s": len(texts) / wall, "prompt_tokens_per_article": summary["prompt_tokens_per_article"],
           "output_tokens_per_article": summary["output_tokens_per_article"], "splits": summary["splits"],
           "reasks": summary["reasks"]}
    return {config: {**row, **scored(labels, confidence, golds, names)}}


def run_score(labeler, engine, engine_spec: dict, texts, golds, batch: int, partial: Partial, tag: str) -> dict:
    """One hf pass gives every score variant (engine.score_variants); calibration as ScoreLabeler does it:
    subtract the mean content-free log-probabilities, renormalise."""
    import numpy as np

    from batchlabel.methods.score import log_normalize

    names = labeler.names
    clipped, _ = engine.clip(texts, engine_spec["max_article_tokens"])
    prompts = [labeler.builder.single(t, [], "label") for t in clipped]
    tokens = float(np.mean([len(engine.chat.prompt_ids(p)) for p in prompts]))
    done = {k: [np.array(r) for r in v] for k, v in partial.state.get("scores", {}).items()}
    wall = partial.state.get("wall", 0.0)
    for start in range(len(done.get("full", [])), len(prompts), batch):
        if partial.out_of_time():
            return {}
        started = time.perf_counter()
        for key, value in engine.score_variants(prompts[start : start + batch], names).items():
            done.setdefault(key, []).extend(value)
        wall += time.perf_counter() - started
        partial.save({"wall": wall, "scores": {k: [r.tolist() for r in v] for k, v in done.items()},
                      "load": [partial.state.setdefault("load", [round(os.getloadavg()[0], 2)])[0],
                               round(os.getloadavg()[0], 2)]})
    started = time.perf_counter()
    free = engine.score_variants([labeler.builder.single(x, [], "label") for x in labeler.method.calibration_inputs], names)
    wall += time.perf_counter() - started
    rows = {}
    for variant in ("full", "label", "first_token"):
        raw = log_normalize(np.array(done[variant]))
        cal = log_normalize(raw - log_normalize(free[variant]).mean(axis=0))
        for suffix, logp in (("raw", raw), ("calibrated", cal)):
            probs = np.exp(logp)
            rows[f"score_{variant}_{suffix}{tag}"] = {
                "engine": "hf (one pass for all six score rows)", "wall_s": wall, "articles_per_s": len(texts) / wall,
                "prompt_tokens_per_article": tokens, "output_tokens_per_article": 0.0, "splits": 0, "reasks": 0,
                **scored([names[i] for i in probs.argmax(1)], probs.max(1).tolist(), golds, names)}
    return rows


def run_embed(corpus: str, texts, golds, pool: Path) -> dict:
    """Reference: MiniLM embeddings + logistic regression trained on the pool (the `embed` method's model)."""
    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression

    from batchlabel.io.storage import StorageSettings
    from batchlabel.models.encoders import SentenceEncoder

    names = [lab["name"] for lab in CORPORA[corpus]["labels"]]
    table = pq.read_table(pool, columns=["text", "label"])
    train = [(t, g) for t, g in zip(table.column("text").to_pylist(), table.column("label").to_pylist()) if g in names]
    encoder = SentenceEncoder("bundled:all-MiniLM-L6-v2", StorageSettings(), max_length=128)
    x = encoder.encode([t for t, _ in train])[0]
    head = LogisticRegression(max_iter=2000).fit(x, [g for _, g in train])
    started = time.perf_counter()
    probs = head.predict_proba(encoder.encode(texts)[0])
    wall = time.perf_counter() - started
    labels = [head.classes_[i] for i in probs.argmax(1)]
    return {"embed_head": {"engine": "MiniLM-L6 + logistic regression (torch)", "wall_s": wall,
                           "articles_per_s": len(texts) / wall, "train_rows": len(train),
                           "prompt_tokens_per_article": 0.0, "output_tokens_per_article": 0.0, "splits": 0, "reasks": 0,
                           **scored(labels, probs.max(1).tolist(), golds, names)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "qwen2.5-coder-1.5b"))
    parser.add_argument("--corpus", choices=list(CORPORA), default="r8")
    parser.add_argument("--rows", type=int, default=104)
    parser.add_argument("--configs", default="prompt_n1", help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--batch", type=int, default=16, help="articles per label() call (progress is saved after each)")
    parser.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "out" / "llm_quality"))
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("--prompt-engine", default="vllm", choices=["vllm", "hf"], help="engine of the prompt rows")
    parser.add_argument("--max-seconds", type=float, default=float("inf"),
                        help="stop starting batches after this long (progress is kept; the next call resumes)")
    parser.add_argument("--force", action="store_true", help="measure again even if a result is cached")
    parser.add_argument("--report", action="store_true", help="only assemble the cached results")
    parser.add_argument("--smoke", action="store_true", help="tiny run (8 rows, a few configs) for the tests")
    args = parser.parse_args()

    work = Path(args.work_dir)
    name = "llm_quality"
    if args.smoke:
        args.rows, args.batch, work, name = 8, 8, Path(args.out_dir) / "work", "llm_quality_smoke"
        args.corpus, args.prompt_engine = "tweets", "hf"
        args.configs = args.configs if args.configs != "prompt_n1" else "prompt_n1,score"
    work.mkdir(parents=True, exist_ok=True)
    if not args.report:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        Partial.deadline = time.monotonic() + args.max_seconds
        texts, golds, pool = sample(args.corpus, args.rows, work)
        engines: dict = {}
        for config in [c for c in args.configs.split(",") if c]:
            cache = work / f"{args.corpus}_{config}.json"
            if cache.exists() and not args.force:
                print(f"{config}: cached in {cache}", flush=True)
                continue
            start_load = os.getloadavg()[0]
            if config == "embed_head":
                rows = run_embed(args.corpus, texts, golds, pool)
            else:
                rows = run_llm(args.corpus, config, args.model, texts, golds, pool, args.batch, args.prompt_engine, work,
                               engines)
                if not rows:
                    print(f"{config}: out of time, progress kept for the next call", flush=True)
                    continue
            load = [round(start_load, 2), round(os.getloadavg()[0], 2)]
            for key, row in rows.items():
                row.update(config=key, corpus=args.corpus, model=Path(args.model).name, load=load)
                print(json.dumps({k: v for k, v in row.items() if k != "per_class"}), flush=True)
            cache.write_text(json.dumps(list(rows.values()), indent=1))
        for _, engine, _ in engines.values():
            engine.close()
    from llm_quality_report import partial_rows, report, report_rows

    if args.report:
        partial_rows(work, args.model, args.rows)
    report_rows(work)
    report(work / "rows", Path(args.out_dir), name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
