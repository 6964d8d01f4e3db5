"""CPU encoder backends: torch vs ONNX Runtime fp32 vs ONNX Runtime int8 vs static (model2vec), against the
seed loop, a bare batched PyTorch loop and sentence-transformers, measured against this CPU's fp32 peak.

Same data (R8 train for the heads, R8 test for speed and accuracy), same encoder (bundled all-MiniLM-L6-v2
or --encoder), same max_length, one logistic-regression head per backend trained on that backend's
embeddings of R8 train (as `batchlabel train` does), in one run:

  phase encode (each variant a subprocess, for its peak memory):
    peak   large fp32 matmul (torch.mm, all cores): the measured fp32 FLOP/s ceiling
    seed   transformers.pipeline() one text at a time + the torch head, on --seed-rows rows (subset)
    bare   a bare batched PyTorch loop (benchmarks/embed_throughput.py BareEncoder) + the torch head
    st     sentence-transformers `encode` (its own batching) + the torch head
    <b>    batchlabel's encoder for backend b (torch, onnx, onnx-int8, static): embed train, fit the head,
           embed test (timed), label; export/distillation happens before the timer (cached beside the model)
  phase run: `batchlabel run` on R8 test with each backend and its head; the static backend on --rows
    (100k) replicated R8 rows.

    flock /work/cpu.lock python benchmarks/cpu_encoders.py --phase encode --work-dir /tmp/ce
    flock /work/cpu.lock python benchmarks/cpu_encoders.py --phase run --work-dir /tmp/ce
    python benchmarks/cpu_encoders.py --phase report --work-dir /tmp/ce      # writes benchmarks/results/
    python benchmarks/cpu_encoders.py --smoke --encoder DIR --out-dir /tmp/r  # all phases, tiny (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    R8_LABELS,
    R8_TEST,
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

BACKENDS = ["torch", "onnx", "onnx-int8", "static"]
BUNDLED = "bundled:all-MiniLM-L6-v2"


def _encoder_dir(reference: str) -> str:
    from batchlabel.io.storage import StorageSettings
    from batchlabel.models.encoders import resolve_encoder

    return str(resolve_encoder(reference, StorageSettings()))  # pipeline(tokenizer=Path) takes it for an object


def _rows(path: Path, limit: int | None) -> tuple[list[str], list[str], list[str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["id", "text", "label"])
    if limit:
        table = table.slice(0, limit)
    return table.column("id").to_pylist(), table.column("text").to_pylist(), table.column("label").to_pylist()


def _scores(gold: list[str], predicted: list[str]) -> dict[str, float]:
    from batchlabel.report.metrics import compute_metrics

    metrics = compute_metrics(gold, predicted, R8_LABELS)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def model_flops(encoder_dir: str, texts: list[str], max_length: int) -> dict[str, float]:
    """Forward FLOPs of the transformer over ``texts`` (unpadded tokens, truncated like the encoders):
    2 x weight matmul MACs per token + attention scores/values (4 x n^2 x hidden per layer per text)."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(encoder_dir)
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    lengths = [min(len(ids), max_length) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = 2 * layers * (4 * h * h + 2 * h * inter)
    attention = sum(4 * layers * h * n * n for n in lengths)
    tokens = sum(lengths)
    return {"tokens": tokens, "flops": float(per_token * tokens + attention), "mflop_per_token": per_token / 1e6}


# --------------------------------------------------------------------------- workers (subprocesses)


def worker_peak(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(usable_cores())
    n = args.peak_n
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(5):
        started = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - started))
    return {"matmul_n": n, "threads": torch.get_num_threads(), "fp32_flops_per_s": best}


def _torch_head(args: argparse.Namespace):
    from batchlabel.io.storage import StorageSettings
    from batchlabel.models.heads import LinearHead

    return LinearHead.load(str(args.work / "head_torch"), StorageSettings())


def worker_seed(args: argparse.Namespace) -> dict[str, Any]:
    import embed_throughput

    ns = argparse.Namespace(head=str(args.work / "head_torch"), input=R8_TEST, notebook_rows=args.seed_rows,
                            max_length=args.max_length)
    embed_throughput._encoder_dir = lambda: _encoder_dir(args.encoder)  # the same encoder as every variant
    result = embed_throughput.worker_notebook(ns)
    ids, gold = _rows(R8_TEST, args.seed_rows)[::2]
    result["labels_by_id"] = dict(zip(result.pop("ids"), result.pop("labels")))
    result.update(_scores(gold, list(result["labels_by_id"].values())))
    return result


def worker_bare(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import embed_throughput

    torch.set_num_threads(usable_cores())
    embed_throughput._encoder_dir = lambda: _encoder_dir(args.encoder)
    head = _torch_head(args)
    ids, texts, gold = _rows(R8_TEST, args.test_rows)
    encoder = embed_throughput.BareEncoder(args.max_length)
    encoder.embed(texts[:16], args.batch_size)  # warm-up
    started = time.perf_counter()
    labels = [head.labels[i] for i in head.predict_proba(encoder.embed(texts, args.batch_size)).argmax(1)]
    seconds = time.perf_counter() - started
    return {"rows": len(texts), "seconds": seconds, "rows_per_s": len(texts) / seconds, **_scores(gold, labels),
            "labels_by_id": dict(zip(ids, labels))}


def worker_st(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(usable_cores())
    head = _torch_head(args)
    ids, texts, gold = _rows(R8_TEST, args.test_rows)
    model = SentenceTransformer(_encoder_dir(args.encoder), device="cpu")
    model.max_seq_length = args.max_length
    model.encode(texts[:16], batch_size=args.batch_size)
    started = time.perf_counter()
    features = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
    labels = [head.labels[i] for i in head.predict_proba(features).argmax(1)]
    seconds = time.perf_counter() - started
    return {"rows": len(texts), "seconds": seconds, "rows_per_s": len(texts) / seconds, **_scores(gold, labels),
            "labels_by_id": dict(zip(ids, labels))}


def worker_backend(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """batchlabel's encoder on ``backend``: head on R8 train, then the timed test encode + head."""
    import torch

    from batchlabel.io.storage import StorageSettings
    from batchlabel.models.backends import load_encoder
    from batchlabel.models.heads import LinearHead

    torch.set_num_threads(usable_cores())
    storage = StorageSettings()
    started = time.perf_counter()
    encoder = load_encoder(args.encoder, storage, args.max_length, backend)  # exports / distils if not cached
    load_s = time.perf_counter() - started
    _, train_texts, train_gold = _rows(R8_TRAIN, args.train_rows)
    started = time.perf_counter()
    train_features, _ = encoder.encode(train_texts, batch_size=args.batch_size)
    train_s = time.perf_counter() - started
    head = LinearHead.fit(train_features, train_gold, R8_LABELS, c=10.0, max_iter=2000, seed=0)
    head.meta = {"encoder": args.encoder, "max_length": args.max_length, "backend": backend,
                 "train_rows": len(train_texts), "train_input": str(R8_TRAIN)}
    head.save(str(args.work / f"head_{backend}"), storage)
    ids, texts, gold = _rows(R8_TEST, args.test_rows)
    started = time.perf_counter()
    labels = [head.labels[i] for i in head.predict_proba(encoder.encode(texts, args.batch_size)[0]).argmax(1)]
    seconds = time.perf_counter() - started
    return {"rows": len(texts), "seconds": seconds, "rows_per_s": len(texts) / seconds, **_scores(gold, labels),
            "load_s": load_s, "train_rows": len(train_texts), "train_rows_per_s": len(train_texts) / train_s,
            "labels_by_id": dict(zip(ids, labels))}


# --------------------------------------------------------------------------- driver


def _worker(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    out = args.work / f"worker_{mode}.json"
    cmd = [sys.executable, __file__, "--worker", mode, "--worker-out", str(out), "--work-dir", str(args.work),
           "--encoder", args.encoder, "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
           "--seed-rows", str(args.seed_rows), "--peak-n", str(args.peak_n)]
    cmd += [f"--train-rows={args.train_rows or 0}", f"--test-rows={args.test_rows or 0}"]
    measured = run_measured(cmd, env=quiet_env())
    if measured.returncode != 0:
        raise RuntimeError(f"worker {mode} failed:\n{measured.stderr[-4000:]}")
    result = json.loads(out.read_text())
    result["memory"] = {k: measured.memory[k] for k in ("peak_tree_rss_mib", "peak_tree_pss_mib")}
    result["load_avg"] = os.getloadavg()
    print(f"[cpu_encoders] {mode}: {result.get('rows_per_s', result.get('fp32_flops_per_s'))}", flush=True)
    return result


def run_batchlabel(args: argparse.Namespace, backend: str, input_path: Path, name: str) -> dict[str, Any]:
    import yaml

    output = args.work / f"run_{name}"
    job = {
        "name": f"bench-cpu-{name}",
        "input": {"path": str(input_path), "id_column": "id", "text_column": "text", "gold_column": "label"},
        "labels": R8_LABELS,
        "method": {"name": "embed", "encoder": args.encoder, "head": str(args.work / f"head_{backend}"),
                   "max_length": args.max_length, "backend": backend,
                   "encode_batch_size": 256 if backend == "static" else args.batch_size},
        "runtime": {"actors": args.actors, "batch_size": args.static_chunk_rows if backend == "static" else args.chunk_rows},
        "output": {"path": str(output), "shard_rows": args.shard_rows},
    }
    spec = args.work / f"{name}_job.yaml"
    spec.write_text(yaml.safe_dump(job, sort_keys=False))
    measured = run_measured([*batchlabel_exe(), "run", str(spec), "--quiet", "--restart"], env=quiet_env())
    if measured.returncode != 0:
        raise RuntimeError(f"batchlabel run failed:\n{measured.stdout[-2000:]}\n{measured.stderr[-4000:]}")
    from batchlabel.io.sink import read_committed
    from batchlabel.io.storage import StorageSettings

    report = json.loads((output / "report.json").read_text())
    run = report.get("run", {})
    table = read_committed(str(output), StorageSettings(), columns=["id", "label"])
    result = {"rows": run.get("rows_labeled_this_run"), "rows_per_s": run.get("rows_per_s"),
              "steady_rows_per_s": run.get("steady_rows_per_s"), "first_batch_s": run.get("first_batch_s"),
              "subprocess_wall_s": round(measured.wall_s, 2), "accuracy": report.get("metrics", {}).get("accuracy"),
              "macro_f1": report.get("metrics", {}).get("macro_f1"), "job": job, "load_avg": os.getloadavg(),
              "memory": {k: measured.memory[k] for k in ("peak_tree_rss_mib", "peak_tree_pss_mib", "cpu_s_by_role")}}
    if name != "static_100k":
        result["labels_by_id"] = dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist()))
    print(f"[cpu_encoders] run {name}: {result['rows_per_s']} rows/s", flush=True)
    return result


def phase_encode(args: argparse.Namespace) -> None:
    state: dict[str, Any] = {"machine": machine(), "peak": _worker("peak", args)}
    for backend in BACKENDS:  # torch first: the seed, bare and st variants use its head
        state[backend] = _worker(backend, args)
    for mode in ("seed", "bare", "st"):
        state[mode] = _worker(mode, args)
    _, texts, _ = _rows(R8_TEST, args.test_rows)
    state["flops"] = model_flops(_encoder_dir(args.encoder), texts, args.max_length)
    (args.work / "encode.json").write_text(json.dumps(state))


def phase_run(args: argparse.Namespace) -> None:
    state: dict[str, Any] = {"load_avg_at_start": os.getloadavg()}
    test = R8_TEST
    if args.test_rows:
        test = replicate_r8(args.test_rows, args.work / "test_subset.parquet")
    for backend in [] if args.smoke else BACKENDS:  # smoke: one Ray start (the static run) only
        state[backend] = run_batchlabel(args, backend, test, backend)
    state["static_100k"] = run_batchlabel(args, "static", replicate_r8(args.rows, args.work / "big.parquet"),
                                          "static_100k")
    state["static_100k"]["input_rows"] = args.rows
    (args.work / "run.json").write_text(json.dumps(state))


def _agree(left: dict[str, str], right: dict[str, str]) -> float | None:
    common = [k for k in left if k in right]
    return sum(left[k] == right[k] for k in common) / len(common) if common else None


def summarise(encode: dict[str, Any], run: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    peak = encode["peak"]["fp32_flops_per_s"]
    flops = encode["flops"]["flops"]
    torch_labels = encode["torch"]["labels_by_id"]
    bare = encode["bare"]["rows_per_s"]
    rows = []
    for name in ("seed", "bare", "st", *BACKENDS):
        item = encode[name]
        per_row = flops / encode["torch"]["rows"]
        achieved = None if name == "static" else item["rows_per_s"] * per_row
        rows.append({"variant": name, "where": "in-process loop", "rows": item["rows"], "rows_per_s": item["rows_per_s"],
                     "x_bare": item["rows_per_s"] / bare, "agreement_with_torch": _agree(item["labels_by_id"], torch_labels),
                     "accuracy": item["accuracy"], "macro_f1": item["macro_f1"],
                     "peak_rss_mib": item["memory"]["peak_tree_rss_mib"], "model_flops_per_s": achieved,
                     "share_of_fp32_peak": None if achieved is None else achieved / peak, "load_avg": item["load_avg"]})
    for name in [n for n in (*BACKENDS, "static_100k") if n in run]:
        item = run[name]
        rows.append({"variant": f"batchlabel run {name}", "where": "batchlabel run (report rows/s)",
                     "rows": item["rows"], "rows_per_s": item["rows_per_s"], "x_bare": item["rows_per_s"] / bare,
                     "agreement_with_torch": _agree(item.get("labels_by_id", {}), run.get("torch", {}).get("labels_by_id", {})),
                     "accuracy": item["accuracy"], "macro_f1": item["macro_f1"],
                     "peak_rss_mib": item["memory"]["peak_tree_rss_mib"], "model_flops_per_s": None,
                     "share_of_fp32_peak": None, "load_avg": item["load_avg"]})
    seed = encode["seed"]["rows_per_s"]
    torch_acc = encode["torch"]["accuracy"]
    targets = {
        "onnx_int8_over_bare": encode["onnx-int8"]["rows_per_s"] / bare,
        "onnx_int8_accuracy_delta_pt": 100 * (encode["onnx-int8"]["accuracy"] - torch_acc),
        "static_over_bare": encode["static"]["rows_per_s"] / bare,
        "static_accuracy_delta_pt": 100 * (encode["static"]["accuracy"] - torch_acc),
        "run_static_100k_over_seed": run["static_100k"]["rows_per_s"] / seed,
        "torch_share_of_fp32_peak": encode["torch"]["rows_per_s"] * flops / encode["torch"]["rows"] / peak,
    }
    return {"benchmark": "cpu_encoders", "smoke": args.smoke, "machine": encode["machine"], "encoder": args.encoder,
            "max_length": args.max_length, "batch_size": args.batch_size, "peak": encode["peak"],
            "flops": encode["flops"], "rows": rows, "targets": targets, "train_rows": encode["torch"]["train_rows"],
            "static_100k_cpu_s_by_role": run["static_100k"]["memory"]["cpu_s_by_role"],
            "run_load_avg_at_start": run["load_avg_at_start"]}


def _f(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    t = result["targets"]
    table = md_table(
        ["variant", "measured as", "rows", "rows/s", "x bare torch", "agree w/ torch", "accuracy", "macro-F1",
         "peak RSS MiB", "model GFLOP/s", "share of fp32 peak", "load avg"],
        [[r["variant"], r["where"], r["rows"], _f(r["rows_per_s"]), _f(r["x_bare"], 2), _f(r["agreement_with_torch"], 4),
          _f(r["accuracy"], 4), _f(r["macro_f1"], 4), _f(r["peak_rss_mib"], 0),
          _f(None if r["model_flops_per_s"] is None else r["model_flops_per_s"] / 1e9),
          _f(r["share_of_fp32_peak"], 3), str([round(x, 1) for x in r["load_avg"]])] for r in result["rows"]],
    )
    lines = [
        f"# CPU encoder backends (R8 test, max_length {result['max_length']}, encoder {result['encoder']})", "",
        machine_markdown(result["machine"]), "", table, "",
        f"- Measured fp32 peak: {_f(result['peak']['fp32_flops_per_s'] / 1e9)} GFLOP/s (torch.mm "
        f"{result['peak']['matmul_n']}^2, {result['peak']['threads']} threads). Model FLOPs: "
        f"{_f(result['flops']['mflop_per_token'])} MFLOP/token (weights) + attention, "
        f"{result['flops']['tokens']:,} tokens on R8 test.",
        f"- Targets: onnx-int8 / bare torch = {t['onnx_int8_over_bare']:.2f}x (>= 2x), accuracy "
        f"{t['onnx_int8_accuracy_delta_pt']:+.2f} pt (within 0.5); static / bare = {t['static_over_bare']:.1f}x "
        f"(>= 30x), accuracy {t['static_accuracy_delta_pt']:+.2f} pt (within 1.5); batchlabel run static on "
        f"100k rows / seed loop = {t['run_static_100k_over_seed']:.1f}x (>= 10x; the seed loop is measured on a "
        f"subset); torch loop at {t['torch_share_of_fp32_peak']:.2f} of the measured fp32 peak.",
        f"- batchlabel run static, 100k rows: CPU seconds by process {result['static_100k_cpu_s_by_role']}.",
        f"- Heads: one per backend, trained on that backend's embeddings of {result['train_rows']} R8 train rows (C=10); seed, bare "
        "and sentence-transformers use the torch head. Agreement is with the torch backend's labels (in-process "
        "rows: batchlabel's torch encoder; run rows: batchlabel run torch).",
    ]
    if result.get("smoke"):
        lines.insert(2, "**Smoke run (tiny): the numbers mean nothing.**\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["encode", "run", "report", "all"], default="all")
    parser.add_argument("--smoke", action="store_true", help="Tiny run for CI (use --encoder with a tiny model).")
    parser.add_argument("--encoder", default=BUNDLED, help="Encoder reference (bundled MiniLM or a local dir).")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="Encoder batch size (all batched variants).")
    parser.add_argument("--train-rows", type=int, default=0, help="R8 train rows for the heads (0 = all).")
    parser.add_argument("--test-rows", type=int, default=0, help="R8 test rows (0 = all).")
    parser.add_argument("--seed-rows", type=int, default=300, help="The seed loop runs on this many test rows.")
    parser.add_argument("--rows", type=int, default=100_000, help="Rows for the static end-to-end run.")
    parser.add_argument("--peak-n", type=int, default=2048, help="Matmul size for the fp32 peak.")
    parser.add_argument("--actors", type=int, default=None, help="batchlabel run actors (default: one per core).")
    parser.add_argument("--chunk-rows", type=int, default=256, help="runtime.batch_size of the runs.")
    parser.add_argument("--static-chunk-rows", type=int, default=2048, help="runtime.batch_size of static runs.")
    parser.add_argument("--shard-rows", type=int, default=10000)
    parser.add_argument("--work-dir", type=Path, required=False)
    parser.add_argument("--out-dir", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_rows, args.test_rows = args.train_rows or 48, args.test_rows or 24
        args.seed_rows, args.rows, args.peak_n, args.shard_rows = 8, 200, 256, 100
        args.chunk_rows = args.static_chunk_rows = 16
    args.train_rows, args.test_rows = args.train_rows or None, args.test_rows or None
    args.actors = args.actors or usable_cores()
    for key, value in quiet_env().items():
        os.environ.setdefault(key, value)
    args.work = args.work_dir or Path("/tmp/bl-cpu-encoders")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.worker:
        workers = {"peak": worker_peak, "seed": worker_seed, "bare": worker_bare, "st": worker_st}
        result = workers[args.worker](args) if args.worker in workers else worker_backend(args, args.worker)
        args.worker_out.write_text(json.dumps(result))
        return
    if args.phase in ("encode", "all"):
        phase_encode(args)
    if args.phase in ("run", "all"):
        phase_run(args)
    if args.phase in ("report", "all"):
        encode = json.loads((args.work / "encode.json").read_text())
        result = summarise(encode, json.loads((args.work / "run.json").read_text()), args)
        name = "cpu_encoders_smoke" if args.smoke else "cpu_encoders"
        json_path, md_path = write_results(name, result, markdown(result), args.out_dir)
        print(f"[cpu_encoders] wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
