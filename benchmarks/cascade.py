"""Cascades on Reuters R8 test and the VADER tweets: each stage alone vs the cascade at several thresholds.

    flock /work/cpu.lock python benchmarks/cascade.py --step stages   # heads trained, both encoders label test
    flock /work/cpu.lock python benchmarks/cascade.py --step llm      # the LLM labels the uncertain rows
    python benchmarks/cascade.py --step report                        # curves, JSON + MD into results/
    ... --corpus tweets --name cascade_tweets                         # the same on tweets (cascade_setup.py)
    ... --step llm --llm qwen_fewshot_stratified                      # Qwen2.5-Coder-1.5B as the expensive stage
    python benchmarks/cascade.py --smoke                              # tiny, all steps (tests)

Stages, each run alone in this process (no Ray: the labeler's own cost) on the same rows, labels and
confidences kept per row: (A) static embedding (model2vec distilled from MiniLM, backend static) + linear head,
(B) MiniLM + linear head (both heads trained on the corpus's train split), (C) an LLM (--llm, cascade_setup.py):
SmolLM2-135M-Instruct calibrated label scoring, or Qwen2.5-Coder-1.5B-Instruct prompted few-shot on vLLM.
A cascade's output is a per-row function of its stages' outputs (stage 1's label where its confidence >= t,
else stage 2's), so every threshold is evaluated from the same per-row outputs; --step check runs the real
`method: cascade` (Ray, one actor pool per stage) on a prefix and counts disagreements with that simulation.
The LLM labels only the stage-1 rows with the lowest confidence (--llm-rows) plus a random sample of
--llm-sample rows for its accuracy alone: thresholds that escalate more rows than it labeled are not reported.
Cost: CPU seconds of the labeling calls (getrusage, all threads; model load excluded) per 1,000 articles;
tokens per 1,000 articles for the LLM.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import os
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cascade_setup import LLM_PRESETS, corpus_paths, labels, llm_method  # noqa: E402
from common import (  # noqa: E402
    machine,
    machine_markdown,
    md_table,
    write_results,
)

WORK = Path("/tmp/batchlabel_cascade_bench")
CORPUS = "r8"


MAX_LENGTH = 256
#: the two encoder stages: (name, backend, max_length or None = --max-length); --smoke: two MiniLM heads at 16 / 64
#: tokens (a static model is distilled once, minutes: too slow for a smoke test)
STAGES = [("static", "static", None), ("minilm", "torch", None)]
SMOKE_STAGES = [("minilm16", "torch", 16), ("minilm64", "torch", 64)]


def embed(backend: str, head: str, max_length: int | None = None) -> dict:
    return {"name": "embed", "backend": backend, "max_length": max_length or MAX_LENGTH, "head": head}


def job(method: dict, train_rows: str | None = None, head: str | None = None, described: bool = False) -> object:
    from batchlabel.config import parse_job

    test, _ = corpus_paths(CORPUS, WORK)
    raw = {"name": "bench", "input": {"path": str(test), "gold_column": "label"}, "labels": labels(CORPUS, described),
           "method": method, "output": {"path": str(WORK / "unused")}}
    if train_rows:
        raw["method"] = {k: v for k, v in method.items() if k != "head"}
        raw["train"] = {"method": "head", "input": {"path": train_rows, "gold_column": "label"}, "output": head}
    return parse_job(raw)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def label(method: dict, texts: list[str], chunk: int = 64) -> dict:
    """One stage alone over ``texts``: labels, confidences, CPU and wall seconds, tokens."""
    from batchlabel.methods import build_labeler

    started = time.monotonic()
    labeler = build_labeler(job(method))
    load_s = time.monotonic() - started
    labels, conf, tokens = [], [], 0
    cpu0, wall0 = cpu_s(), time.monotonic()
    for start in range(0, len(texts), chunk):
        out = labeler.label(texts[start:start + chunk])
        labels += out.labels
        conf += [float("nan") if c is None else float(c) for c in out.confidence]
        if out.tokens is not None:
            tokens += sum(out.tokens.prompt) + sum(out.tokens.output)
    return {"labels": labels, "confidence": conf, "cpu_s": cpu_s() - cpu0, "wall_s": time.monotonic() - wall0,
            "load_s": load_s, "tokens": tokens, "rows": len(texts)}


def rows(limit: int | None, train_limit: int | None) -> tuple[list, list, list, str]:
    test_path, train = corpus_paths(CORPUS, WORK)
    test = pq.read_table(test_path)
    if limit:
        test = test.slice(0, limit)
    train_path = str(train)
    if train_limit:
        train_path = str(WORK / "train_small.parquet")
        pq.write_table(pq.read_table(train).slice(0, train_limit), train_path)
    return test.column("id").to_pylist(), test.column("text").to_pylist(), test.column("label").to_pylist(), train_path


def step_stages(args) -> None:
    from batchlabel.training.base import train_model

    ids, texts, gold, train_path = rows(args.limit, args.train_limit)
    out = {"ids": ids, "gold": gold, "stages": {}, "machine": machine(), "max_length": MAX_LENGTH,
           "train_rows": pq.read_metadata(train_path).num_rows}
    for name, backend, length in STAGES:
        head = str(WORK / f"head_{backend}_{length or MAX_LENGTH}_{args.train_limit or 'all'}")
        if not (Path(head) / "head.json").exists():
            t0 = time.monotonic()
            train_model(job(embed(backend, head, length), train_rows=train_path, head=head), progress=False)
            print(f"{name}: head trained in {time.monotonic() - t0:.0f} s", flush=True)
        out["stages"][name] = label(embed(backend, head, length), texts)
        print(f"{name}: {out['stages'][name]['cpu_s']:.1f} CPU s", flush=True)
    (WORK / "stages.json").write_text(json.dumps(out))


def step_llm(args) -> None:
    """The LLM on a random sample (its accuracy alone), then on stage 1's rows from the lowest confidence up;
    saved after every chunk of 8, resumed by the next call, stopped after --max-seconds."""
    from batchlabel.methods import build_labeler

    data = json.loads((WORK / "stages.json").read_text())
    _, texts, _, train_path = rows(args.limit, args.train_limit)
    path = WORK / f"llm_{args.llm}.json"
    conf = np.nan_to_num(np.array(data["stages"]["minilm"]["confidence"]), nan=-1.0)
    sample = np.random.default_rng(0).choice(len(texts), size=min(args.llm_sample, len(texts)), replace=False)
    order = [int(i) for i in sample] + [int(i) for i in np.argsort(conf, kind="mergesort")[: args.llm_rows]]
    state = json.loads(path.read_text()) if path.exists() else {
        "labels": {}, "cpu_s": 0.0, "tokens": 0, "sample": sorted(int(i) for i in sample), "load_s": None}
    todo = [i for i in dict.fromkeys(order) if str(i) not in state["labels"]]
    started = time.monotonic()
    labeler = build_labeler(job(llm_method(args.llm, CORPUS, Path(train_path)), described=True))
    state["load_s"] = state["load_s"] or time.monotonic() - started
    for start in range(0, len(todo), 8):
        if time.monotonic() - started > args.max_seconds:
            break
        chunk = todo[start:start + 8]
        cpu0 = cpu_s()
        out = labeler.label([texts[i] for i in chunk])
        state["cpu_s"] += cpu_s() - cpu0
        state["tokens"] += sum(out.tokens.prompt) + sum(out.tokens.output) if out.tokens else 0
        state["labels"].update({str(i): lab for i, lab in zip(chunk, out.labels)})
        path.write_text(json.dumps(state))
        print(f"{args.llm}: {len(state['labels'])} rows, {state['cpu_s']:.0f} CPU s", flush=True)


def step_check(args) -> None:
    """The real `method: cascade` (Ray, one actor pool per stage) on the first --check-rows rows, at the threshold
    escalating ~20%: its labels and labeled_by against the per-row simulation that the report uses."""
    from batchlabel.config import parse_job
    from batchlabel.io.sink import read_committed
    from batchlabel.io.storage import StorageSettings
    from batchlabel.run.pipeline import run_job

    data = json.loads((WORK / "stages.json").read_text())
    (cheap, backend1, length1), (strong, backend2, length2) = STAGES
    first, second = data["stages"][cheap], data["stages"][strong]
    n = min(args.check_rows, len(data["ids"]))
    below = float(np.quantile(np.nan_to_num(np.array(first["confidence"][:n]), nan=-1.0), 0.2)) + 1e-6
    heads = [str(WORK / f"head_{b}_{length or MAX_LENGTH}_{args.train_limit or 'all'}") for b, length in
             ((backend1, length1), (backend2, length2))]
    stages = [{"method": embed(backend1, heads[0], length1), "min_confidence": below},
              {"method": embed(backend2, heads[1], length2)}]
    raw = {"name": "cascade-check", "input": {"path": str(corpus_paths(CORPUS, WORK)[0]), "gold_column": "label",
                                              "limit": n},
           "labels": labels(CORPUS), "method": {"name": "cascade", "stages": stages},
           "runtime": {"actors": 1, "batch_size": 32}, "output": {"path": str(WORK / "check_out"), "shard_rows": 500}}
    run_job(parse_job(raw), restart=True, progress=False)
    table = read_committed(str(WORK / "check_out"), StorageSettings())
    real = dict(zip(table.column("id").to_pylist(), zip(table.column("label").to_pylist(),
                                                          table.column("labeled_by").to_pylist())))
    mismatches = 0
    for i in range(n):
        up = not (first["confidence"][i] >= below)
        expected = (second["labels"][i] if up else first["labels"][i], 2 if up else 1)
        mismatches += real[data["ids"][i]] != expected
    check = {"rows": n, "min_confidence": below, "escalated": sum(1 for v in real.values() if v[1] == 2),
             "disagreements_with_simulation": mismatches}
    (WORK / "check.json").write_text(json.dumps(check))
    print("check:", check, flush=True)


def cascade_rows(gold, first, second, second_known, cost1, cost2, tokens2, thresholds) -> list[dict]:
    """The cascade first -> second at each threshold (rows below it take second's label)."""
    gold = np.array(gold, dtype=object)
    c1 = np.nan_to_num(np.array(first["confidence"]), nan=-1.0)
    l1, l2 = np.array(first["labels"], dtype=object), np.array(second, dtype=object)
    out = []
    for t in thresholds:
        up = c1 < t
        if (up & ~second_known).any():
            continue  # the second stage did not label every row this threshold escalates
        pred = np.where(up, l2, l1)
        share = float(up.mean())
        out.append({"min_confidence": round(float(t), 6), "share_escalated": share,
                    "accuracy": float((pred == gold).mean()),
                    "cpu_s_per_1000": 1000 * (cost1 + share * cost2),
                    "tokens_per_1000": 1000 * share * tokens2 if tokens2 else 0.0})
    return out


def thresholds(first: dict, gold: list) -> list[float]:
    """From the stage's accuracy-coverage curve: the 90/95/99% thresholds, and those escalating 5-30%."""
    from batchlabel.report.calibration import thresholds_for

    conf = np.nan_to_num(np.array(first["confidence"]), nan=-1.0)
    right = np.array(first["labels"], dtype=object) == np.array(gold, dtype=object)
    picked = {round(r["threshold"], 6) for r in thresholds_for(conf, right, (0.9, 0.95, 0.97, 0.98, 0.99)) if r["threshold"]}
    for share in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3):
        picked.add(round(float(np.quantile(conf, share)), 6) + 1e-6)
    return sorted(picked)


def step_report(args) -> None:
    data = json.loads((WORK / "stages.json").read_text())
    gold, stages = data["gold"], data["stages"]
    n = len(gold)
    per = {k: {"accuracy": float(np.mean(np.array(v["labels"], dtype=object) == np.array(gold, dtype=object))),
               "rows": v["rows"], "cpu_s_per_1000": 1000 * v["cpu_s"] / v["rows"], "load_s": v["load_s"],
               "tokens_per_1000": 0.0} for k, v in stages.items()}
    result = {"corpus": CORPUS, "machine": data["machine"], "rows": n, "max_length": data.get("max_length"), "train_rows": data.get("train_rows"),
              "stages_alone": per, "cascades": {}}
    (cheap, *_), (strong, *_) = STAGES
    result["cascades"][f"{cheap} -> {strong}"] = cascade_rows(
        gold, stages[cheap], stages[strong]["labels"], np.ones(n, bool), per[cheap]["cpu_s_per_1000"] / 1000,
        per[strong]["cpu_s_per_1000"] / 1000, 0, thresholds(stages[cheap], gold))
    for preset in LLM_PRESETS:
        llm_path = WORK / f"llm_{preset}.json"
        if not llm_path.exists():
            continue
        llm = json.loads(llm_path.read_text())
        labels2 = [llm["labels"].get(str(i)) for i in range(n)]
        known = np.array([str(i) in llm["labels"] for i in range(n)])
        sample = [i for i in llm["sample"] if known[i]]
        per_row_cpu, per_row_tokens = llm["cpu_s"] / len(llm["labels"]), llm["tokens"] / len(llm["labels"])
        per[preset] = {
            "accuracy": float(np.mean([labels2[i] == gold[i] for i in sample])), "rows": len(sample),
            "accuracy_on": f"random sample of {len(sample)} rows", "cpu_s_per_1000": 1000 * per_row_cpu,
            "load_s": llm["load_s"], "tokens_per_1000": 1000 * per_row_tokens, "rows_labeled": len(llm["labels"]),
            # the LLM's accuracy on the rows MiniLM is least sure of (what a cascade sends it), vs MiniLM's there
            "on_escalated": escalated_accuracy(gold, stages["minilm"], labels2, known)}
        result["cascades"][f"minilm -> {preset}"] = cascade_rows(
            gold, stages["minilm"], labels2, known, per["minilm"]["cpu_s_per_1000"] / 1000, per_row_cpu, per_row_tokens,
            thresholds(stages["minilm"], gold))
    if (WORK / "check.json").exists():
        result["real_cascade_check"] = json.loads((WORK / "check.json").read_text())
    result["target"] = target_check(result)
    write_results(args.name, result, markdown(result), Path(args.out) if args.out else None)
    print(markdown(result))


def escalated_accuracy(gold: list, first: dict, labels2: list, known: np.ndarray) -> dict:
    """On the lowest-confidence 20% of stage 1's rows (those the LLM labeled): stage 1's and the LLM's accuracy."""
    conf = np.nan_to_num(np.array(first["confidence"]), nan=-1.0)
    low = [int(i) for i in np.argsort(conf, kind="mergesort")[: int(0.2 * len(gold))] if known[i]]
    return {"rows": len(low), "first_stage": float(np.mean([first["labels"][i] == gold[i] for i in low])) if low else None,
            "llm": float(np.mean([labels2[i] == gold[i] for i in low])) if low else None}


def target_check(result: dict) -> dict:
    """Per cascade: the best accuracy with <= 20% escalated vs its best single stage."""
    out = {}
    for name, curve in result["cascades"].items():
        first, second = [s.strip() for s in name.split("->")]
        best_single = max(result["stages_alone"][first]["accuracy"], result["stages_alone"][second]["accuracy"])
        ok = [r for r in curve if r["share_escalated"] <= 0.2]
        best = max(ok, key=lambda r: r["accuracy"], default=None)
        out[name] = {"best_single_stage_accuracy": best_single, "best_at_most_20pct": best,
                     "met": bool(best and best["accuracy"] >= best_single),
                     # met only by escalating (almost) nothing: the cascade equals its first stage, no gain
                     "no_gain": bool(best and best["accuracy"] <= result["stages_alone"][first]["accuracy"])}
    return out


def markdown(result: dict) -> str:
    corpus = {"r8": "Reuters R8 test", "tweets": "VADER tweets (fixed 1-in-5 test split)"}[result["corpus"]]
    lines = [f"# Cascades on {corpus}", "", machine_markdown(result["machine"]), "",
             (f"Rows: {result['rows']} ({corpus}, first rows); heads trained on {result['train_rows']} train rows; "
             f"encoders at max_length {result['max_length']}. Stages alone:"), ""]
    lines.append(md_table(["stage", "accuracy", "on rows", "CPU s / 1,000 articles", "tokens / 1,000", "load s"], [
        [k, v["accuracy"], v.get("accuracy_on", v["rows"]), v["cpu_s_per_1000"], v["tokens_per_1000"], v["load_s"]]
        for k, v in result["stages_alone"].items()]))
    for name, stage in result["stages_alone"].items():
        if stage.get("on_escalated", {}).get("rows"):
            low = stage["on_escalated"]
            lines += ["", f"Of the {int(0.2 * result['rows'])} rows with minilm's lowest confidence (the 20% a cascade "
                      f"would escalate), the {low['rows']} that {name} labeled: minilm {low['first_stage']:.3f}, "
                      f"{name} {low['llm']:.3f} accuracy."]
    for name, curve in result["cascades"].items():
        lines += ["", f"## {name}", "", md_table(
            ["min_confidence", "share escalated", "accuracy", "CPU s / 1,000", "tokens / 1,000"],
            [[r["min_confidence"], r["share_escalated"], r["accuracy"], r["cpu_s_per_1000"], r["tokens_per_1000"]]
             for r in curve])]
        check = result["target"][name]
        best = check["best_at_most_20pct"]
        lines += ["", f"Target (≥ best single stage {check['best_single_stage_accuracy']:.4f} with ≤ 20% escalated): "
                  + ("**met**" if check["met"] else "not met")
                  + (f" — best at ≤ 20%: {best['accuracy']:.4f} at t={best['min_confidence']} "
                     f"({best['share_escalated']:.1%} escalated)" if best else "")
                  + (" — trivially: only by escalating (almost) nothing, no gain over the first stage alone"
                     if check["met"] and check["no_gain"] else "")]
    check = result.get("real_cascade_check")
    if check:
        lines += ["", (f"Real `method: cascade` run (Ray, one actor pool per stage) on the first {check['rows']} rows at "
                  f"min_confidence {check['min_confidence']:.4f}: {check['escalated']} rows escalated, "
                  f"{check['disagreements_with_simulation']} rows whose label or labeled_by differ from the per-row "
                  "simulation the tables use.")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", choices=["stages", "llm", "check", "report", "all"], default="all")
    parser.add_argument("--smoke", action="store_true", help="60 test rows, 200 train rows, no LLM")
    parser.add_argument("--corpus", choices=["r8", "tweets"], default="r8")
    parser.add_argument("--llm", choices=LLM_PRESETS, default="smollm2_score", help="--step llm: the expensive stage")
    parser.add_argument("--limit", type=int, default=None, help="first N rows of the test split")
    parser.add_argument("--train-limit", type=int, default=None, help="first N rows of the train split for the heads")
    parser.add_argument("--llm-rows", type=int, default=300, help="lowest-confidence MiniLM rows the LLM labels")
    parser.add_argument("--llm-sample", type=int, default=100, help="random rows for the LLM's accuracy alone")
    parser.add_argument("--check-rows", type=int, default=200, help="--step check: rows of the real cascade run")
    parser.add_argument("--max-seconds", type=float, default=540, help="--step llm: stop after this long")
    parser.add_argument("--max-length", type=int, default=256, help="encoder tokens per article (both heads)")
    parser.add_argument("--name", default="cascade")
    parser.add_argument("--out", default=None)
    parser.add_argument("--work", default=None, help="work directory (default /tmp/batchlabel_cascade_bench/<corpus>)")
    args = parser.parse_args()
    global WORK, MAX_LENGTH, STAGES, CORPUS
    CORPUS = args.corpus
    WORK = Path(args.work) if args.work else WORK / args.corpus
    if args.smoke:
        args.limit, args.train_limit, args.name = args.limit or 40, args.train_limit or 100, "cascade_smoke"
        args.step, args.max_length, STAGES = "smoke", 64, SMOKE_STAGES
    MAX_LENGTH = args.max_length
    WORK.mkdir(parents=True, exist_ok=True)
    if args.step in ("stages", "all", "smoke"):
        step_stages(args)
    if args.step in ("llm", "all"):
        step_llm(args)
    if args.step in ("check", "all", "smoke"):
        step_check(args)
    if args.step in ("report", "all", "smoke"):
        step_report(args)


if __name__ == "__main__":
    main()
