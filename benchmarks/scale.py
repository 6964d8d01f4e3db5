"""Scale: `batchlabel run` (embed method) on R8 test replicated to growing sizes.

Time should grow linearly with rows (time per row roughly constant) and the peak memory of the whole
process tree (CLI driver + raylet + GCS + Ray workers) should stay flat: the object store is bounded
and input/output stream shard by shard. Short texts keep big sizes feasible: max_length defaults to 32
tokens (flag), which makes the encoder cheap so that the runner's own costs show.

    python benchmarks/scale.py --sizes 10000,100000
    python benchmarks/scale.py --sizes 10000,100000,1000000      # the 1M run (long)
    python benchmarks/scale.py --smoke --out-dir /tmp/r            # two tiny sizes (CI)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    machine,
    machine_markdown,
    md_table,
    quiet_env,
    replicate_r8,
    usable_cores,
    write_results,
)
from embed_throughput import ENCODER, run_batchlabel, train_head  # noqa: E402


def markdown(result: dict[str, Any]) -> str:
    rows = [
        [r["rows"], r["subprocess_wall_s"], r["rows_per_s"], r["rows_per_s_subprocess_wall"],
         r.get("first_batch_s"), r.get("steady_rows_per_s"),
         r["time_per_row_ratio"], r["memory"]["peak_tree_rss_mib"], r["memory"]["peak_tree_pss_mib"],
         r["pss_ratio"], r["memory"]["peak_root_rss_mib"], r["memory"]["max_processes"]]
        for r in result["runs"]
    ]
    lines = [
        f"# Scale: batchlabel run, embed method, max_length {result['max_length']} tokens",
        "",
        machine_markdown(result["machine"]),
        "",
        md_table(["rows", "wall s (subprocess)", "rows/s (report)", "rows/s (wall)", "start-up s", "steady rows/s",
                  "time/row vs smallest", "peak RSS MiB (tree)", "peak PSS MiB (tree)", "PSS vs smallest",
                  "peak RSS MiB (driver)", "processes"], rows),
        "",
        f"- Texts are cut at max_length {result['max_length']} tokens (short on purpose, so that big sizes are "
        "feasible on this machine and the runner's own per-row costs are visible).",
        "- time/row uses the report's labeling wall time (Ray start + model load + labeling + commits); a "
        "fixed start-up cost makes it fall below 1 at bigger sizes. Linear = it stays <= ~1. start-up = Ray start, "
        "actor start, model load and the first batch; steady rows/s = the rest of the run (the report's "
        "`first_batch_s` / `steady_rows_per_s`): constant steady throughput = linear time.",
        "- Peak RSS sums every process of the tree (shared pages such as the object store counted per process); "
        "PSS splits shared pages (the real footprint). Flat = the ratio stays near 1.",
        f"- encode_batch_size {result['encode_batch_size']}, runtime.batch_size {result['runtime_batch_size']}, "
        f"shard_rows {result['shard_rows']}, object store {result['object_store']}, runtime.actors "
        f"{result['actors']} (threads per actor: {result['threads_per_actor'] or 'cores / actors'}).",
    ]
    if result.get("smoke"):
        lines.insert(2, "**Smoke run (tiny): the numbers mean nothing.**\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="Comma-separated row counts (e.g. 10000,100000,1000000).")
    parser.add_argument("--smoke", action="store_true", help="Two tiny sizes for CI; numbers mean nothing.")
    parser.add_argument("--max-length", type=int, default=32, help="Tokens kept per text.")
    parser.add_argument("--head", help="Existing linear head dir (bundled all-MiniLM-L6-v2, R8 labels).")
    parser.add_argument("--head-rows-per-label", type=int, default=50, help="Head training sample without --head.")
    parser.add_argument("--encode-batch-size", type=int, default=64, help="method.encode_batch_size.")
    parser.add_argument("--chunk-rows", type=int, default=256, help="runtime.batch_size (rows per Ray batch).")
    parser.add_argument("--shard-rows", type=int, default=10_000, help="output.shard_rows.")
    parser.add_argument("--actors", type=int, help="runtime.actors (default: one labeling actor per core).")
    parser.add_argument("--threads-per-actor", type=int, help="runtime.threads_per_actor (default: cores / actors).")
    parser.add_argument("--out-dir", type=Path, help="Where the JSON/Markdown go (default benchmarks/results).")
    parser.add_argument("--work-dir", type=Path, help="Scratch dir (default: a temp dir, removed).")
    args = parser.parse_args(argv)
    sizes = sorted(int(x) for x in args.sizes.split(",") if x)
    if args.smoke:
        sizes = [20, 40]
        args.head_rows_per_label = min(args.head_rows_per_label, 6)
        args.chunk_rows, args.shard_rows = 16, 20
    args.actors = args.actors or usable_cores()
    for key, value in quiet_env().items():
        os.environ.setdefault(key, value)
    info = machine()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bl-scale-bench-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        head_note = f"given: {args.head}"
        if not args.head:
            args.head = train_head(work / "head", args.head_rows_per_label, args.max_length)
            head_note = f"trained here on the first {args.head_rows_per_label} R8 train rows per label"
        for size in sizes:
            run_args = argparse.Namespace(**{**vars(args), "rows": size})
            run_args.input = replicate_r8(size, work / f"input_{size}.parquet")
            print(f"[scale] {size} rows ...", flush=True)
            run = run_batchlabel(run_args, work, args.encode_batch_size, name=f"run_{size}")
            run.pop("output")
            run.pop("job")
            (work / f"input_{size}.parquet").unlink()
            runs.append(run)
            print(f"[scale] {size} rows: {run['subprocess_wall_s']} s, {run['rows_per_s']:.1f} rows/s, peak PSS "
                  f"{run['memory']['peak_tree_pss_mib']} MiB", flush=True)
    base = runs[0]
    base_time_per_row = base["report_wall_time_s"] / base["rows"]
    for run in runs:
        run["time_per_row_s"] = run["report_wall_time_s"] / run["rows"]
        run["time_per_row_ratio"] = run["time_per_row_s"] / base_time_per_row
        run["rss_ratio"] = run["memory"]["peak_tree_rss_mib"] / base["memory"]["peak_tree_rss_mib"]
        run["pss_ratio"] = run["memory"]["peak_tree_pss_mib"] / max(base["memory"]["peak_tree_pss_mib"], 1e-9)
    result = {
        "benchmark": "scale",
        "smoke": args.smoke,
        "sizes": sizes,
        "max_length": args.max_length,
        "model": ENCODER,
        "head": head_note,
        "encode_batch_size": args.encode_batch_size,
        "runtime_batch_size": args.chunk_rows,
        "shard_rows": args.shard_rows,
        "object_store": "runtime.object_store_mb default (local Ray)",
        "actors": args.actors,
        "threads_per_actor": args.threads_per_actor,
        "machine": info,
        "runs": runs,
        "largest_vs_smallest": {
            "time_per_row_ratio": runs[-1]["time_per_row_ratio"],
            "rss_ratio": runs[-1]["rss_ratio"],
            "pss_ratio": runs[-1]["pss_ratio"],
        },
    }
    name = "scale_smoke" if args.smoke else "scale_" + "_".join(str(s) for s in sizes)
    json_path, md_path = write_results(name, result, markdown(result), args.out_dir)
    print(f"[scale] largest vs smallest: {result['largest_vs_smallest']}; wrote {json_path} and {md_path}", flush=True)
    return result


if __name__ == "__main__":
    main()
