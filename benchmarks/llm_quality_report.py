"""The result files of benchmarks/llm_quality.py: rows of unfinished (time-boxed) configurations, one row file per
labeler, and the JSON + Markdown tables in benchmarks/results/."""

from __future__ import annotations

import json
from pathlib import Path

from common import machine, machine_markdown, md_table, write_results
from llm_quality import CONFIGS, CORPORA, sample
from llm_quality_metrics import scored


def report(out: Path, results_dir: Path, name: str) -> None:
    order = {name: i for i, name in enumerate(CONFIGS)}
    rows = [json.loads(p.read_text()) for p in out.glob("*.json")]
    rows.sort(key=lambda r: (r["corpus"], order.get("score" if r["config"].startswith("score_") else r["config"].split(" ")[0].removesuffix("_short"), 99),
                             r["config"]))
    result = {"configs": rows, "machine": machine()}
    lines = ["# LLM label quality on CPU", "", machine_markdown(result["machine"]), "",
             "Each row: fixed stratified sample, labelers driven directly (no Ray); accuracy with a 95% Wilson "
             "interval; confidence quality as ECE (15 bins) and AUROC (correct vs confidence). `load` = load average "
             "(1 min) at the start and end of that row's measurement.", ""]
    for corpus in CORPORA:
        mine = [r for r in rows if r["corpus"] == corpus]
        if not mine:
            continue
        lines += [f"## {corpus} ({mine[0]['model']}, {mine[0]['rows']} rows)", ""]
        table = []
        for r in mine:
            lo, hi = r["accuracy_95"]
            table.append([r["config"], r["engine"], f"{r['accuracy']:.3f} [{lo:.2f}, {hi:.2f}]", r["macro_f1"],
                          r["error_rows"], r["reasks"], (round(r["prompt_tokens_per_article"]) if r["prompt_tokens_per_article"] == r["prompt_tokens_per_article"] else "n/a"),
                          round(r["output_tokens_per_article"], 1), r["articles_per_s"], r["ece"], r["auroc"],
                          f"{r['load'][0]:.1f}/{r['load'][1]:.1f}"])
        lines += [md_table(["labeler", "engine", "accuracy [95%]", "macro-F1", "error rows", "re-asks",
                            "prompt tok/article", "output tok/article", "articles/s", "ECE", "AUROC", "load"], table), ""]
    write_results(name, result, "\n".join(lines), results_dir)


def partial_rows(work: Path, model: str, rows: int) -> None:
    """Rows for prompt configurations a time-boxed run did not finish: the articles done so far (a prefix of the
    round-robin sample, so still close to stratified), marked partial."""
    from batchlabel.methods.prompt import PromptStats

    for path in work.glob("*.partial.json"):
        corpus, config = path.name[: -len(".partial.json")].split("_", 1)
        state = json.loads(path.read_text())
        stale = work / f"{corpus}_{config}.partial_row.json"
        stale.unlink(missing_ok=True)
        if (work / f"{corpus}_{config}.json").exists():
            continue
        _, golds, _ = sample(corpus, rows, work)
        if state.get("scores"):
            stale.write_text(json.dumps(partial_score_rows(state, corpus, config, golds, model, rows)))
        if not state.get("labels"):
            continue
        n = len(state["labels"])
        summary = PromptStats(**state["stats"]).as_dict() if state.get("stats") else {
            "prompt_tokens_per_article": state.get("tokens", 0) / n, "output_tokens_per_article": 0.0, "splits": 0,
            "reasks": 0}
        names = [lab["name"] for lab in CORPORA[corpus]["labels"]]
        engine = state.get("engine", "vllm")
        row = {"engine": engine + (" (prefix caching)" if engine == "vllm" else ""), "wall_s": state["wall"], "articles_per_s": n / state["wall"],
               "prompt_tokens_per_article": summary["prompt_tokens_per_article"],
               "output_tokens_per_article": summary["output_tokens_per_article"], "splits": summary["splits"],
               "reasks": summary["reasks"], **scored(state["labels"], state["confidence"], golds[:n], names),
               "config": f"{config} (partial: {n} of {rows})", "corpus": corpus, "model": Path(model).name,
               "load": state.get("load", [float("nan")] * 2)}
        (work / f"{corpus}_{config}.partial_row.json").write_text(json.dumps([row]))


def partial_score_rows(state: dict, corpus: str, config: str, golds: list[str], model: str, rows: int) -> list[dict]:
    """Raw score rows from an unfinished score pass (calibration needs the content-free pass, run at the end)."""
    import numpy as np

    from batchlabel.methods.score import log_normalize

    names = [lab["name"] for lab in CORPORA[corpus]["labels"]]
    out = []
    for variant, scores in state["scores"].items():
        probs = np.exp(log_normalize(np.array(scores)))
        n = len(probs)
        out.append({"engine": "hf (one pass for all score rows)", "wall_s": state["wall"], "articles_per_s": n / state["wall"],
                    "prompt_tokens_per_article": float("nan"), "output_tokens_per_article": 0.0, "splits": 0, "reasks": 0,
                    **scored([names[i] for i in probs.argmax(1)], probs.max(1).tolist(), golds[:n], names),
                    "config": f"score_{variant}_raw{config.removeprefix('score')} (partial: {n} of {rows})", "corpus": corpus,
                    "model": Path(model).name, "load": state.get("load", [float("nan")] * 2)})
    return out


def report_rows(work: Path) -> None:
    """Flatten the per-configuration caches (a list of rows each) into one row file per labeler."""
    flat = work / "rows"
    flat.mkdir(exist_ok=True)
    for old in flat.glob("*.json"):
        old.unlink()
    for path in work.glob("*.json"):
        if path.name.endswith(".partial.json"):
            continue
        for row in json.loads(path.read_text()):
            (flat / f"{row['corpus']}_{row['config']}.json").write_text(json.dumps(row))
