"""The README demo as a new user runs it, against the bare batched loop on the same rows, in one run.

    (b) bare:  benchmarks/embed_throughput.py's bare loop (no Ray; tokenizer + AutoModel + pooling + head, batched,
               best batch size of a sweep, torch threads = cores) on R8 test (2,189 rows) with the demo's head and
               max_length;
    (d) demo:  `batchlabel run jobs/reuters_embed.yaml` (the README's first command after set-up) into a fresh output,
               timed around the whole command; its report gives labeling rows/s (Ray start and model load
               included), start-up (to the first committed shard) and steady rows/s after it.

The demo's head is trained first when missing (`batchlabel train jobs/reuters_embed.yaml`, not timed).

    python benchmarks/demo_throughput.py              # writes results/demo_throughput.{json,md}
    python benchmarks/demo_throughput.py --smoke --out-dir /tmp/r   # 40 rows, a head from 6 rows per label (CI)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, R8_TEST, batchlabel_exe, machine, machine_markdown, md_table, quiet_env, run_measured, write_results  # noqa: E402
from embed_throughput import _fmt, _worker, train_head  # noqa: E402

JOB = ROOT / "jobs" / "reuters_embed.yaml"


def _demo_spec() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(JOB.read_text())


def run_demo(output: Path, extra: list[str]) -> dict[str, Any]:
    measured = run_measured([*batchlabel_exe(), "run", str(JOB), "--set", f"output.path={output}", *extra],
                            env=quiet_env(), cwd=ROOT)
    if measured.returncode != 0:
        raise RuntimeError(f"demo failed ({measured.returncode}):\n{measured.stderr[-4000:]}")
    report = json.loads((output / "report.json").read_text())
    run = report["run"]
    return {"rows": run["rows_labeled_this_run"], "command_wall_s": round(measured.wall_s, 2),
            "rows_per_s": run["rows_per_s"], "first_batch_s": run.get("first_batch_s"),
            "steady_rows_per_s": run.get("steady_rows_per_s"), "actors": run.get("actors"),
            "accuracy": report["metrics"]["accuracy"], "macro_f1": report["metrics"]["macro_f1"],
            "memory": measured.memory}


def markdown(result: dict[str, Any]) -> str:
    b, d = result["bare"], result["demo"]
    rows = [
        [f"(b) bare batched loop (batch {b['best_batch_size']}, no Ray)", b["rows"], f"{b['rows_per_s']:.1f}", "", ""],
        ["(d) demo `batchlabel run`, report rows/s (Ray start + model load included)", d["rows"],
         f"{d['rows_per_s']:.1f}", _fmt(d["first_batch_s"]), _fmt(d["steady_rows_per_s"])],
    ]
    spec = result["demo_spec"]
    return "\n".join([
        f"# The README demo ({JOB.relative_to(ROOT)}) vs the bare loop, R8 test, max_length {result['max_length']}",
        "",
        machine_markdown(result["machine"]),
        "",
        md_table(["variant", "rows", "rows/s", "start-up s (to first shard)", "steady rows/s"], rows),
        "",
        f"- Demo runtime: {spec['runtime']}, output.shard_rows {spec['output']['shard_rows']}; whole command "
        f"{d['command_wall_s']} s (CLI start and imports included).",
        f"- Demo steady / bare = {result['ratios']['steady_over_bare']:.3f}; demo report rows/s / bare = "
        f"{result['ratios']['demo_over_bare']:.3f}.",
        f"- Demo accuracy {d['accuracy']:.3f}, macro-F1 {d['macro_f1']:.3f} (R8 test, head trained on R8 train).",
        f"- Per labeling actor: {d['actors']}.",
        f"- (b) batch-size sweep (rows/s): {b['sweep_rows_per_s']}.",
    ])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, help="Where the JSON/Markdown go (default benchmarks/results).")
    parser.add_argument("--smoke", action="store_true", help="40 rows, a head from 6 rows per label; numbers mean nothing.")
    args = parser.parse_args(argv)
    spec = _demo_spec()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bl-demo-bench-") as tmp:
        work = Path(tmp)
        head, rows, extra = ROOT / spec["train"]["output"], R8_TEST, []
        if args.smoke:  # the demo's code path on a slice: a tiny head where the job looks for it, 40 input rows
            import pyarrow.parquet as pq

            head = Path(train_head(work / "head", 6, spec["method"]["max_length"]))
            rows = work / "input.parquet"
            pq.write_table(pq.read_table(R8_TEST).slice(0, 40), rows)
            extra = ["--set", f"train.output={head}", "--set", f"input.path={rows}"]
        elif not head.is_dir() or not any(head.iterdir()):
            trained = run_measured([*batchlabel_exe(), "train", str(JOB)], env=quiet_env(), cwd=ROOT)
            if trained.returncode != 0:
                raise RuntimeError(f"training the demo head failed:\n{trained.stderr[-4000:]}")
        bare_args = argparse.Namespace(input=rows, head=str(head), max_length=spec["method"]["max_length"],
                                       notebook_rows=0, sweep_rows=16 if args.smoke else 1000, chunk_rows=256,
                                       batch_sizes=[8, 16] if args.smoke else [8, 16, 32, 64])
        print("[demo] (b) bare loop on R8 test ...", flush=True)
        b, b_mem = _worker("bare", bare_args, work)
        b["memory"] = b_mem
        print(f"[demo] (b) {b['rows_per_s']:.1f} rows/s; (d) batchlabel run {JOB.name} ...", flush=True)
        d = run_demo(work / "demo_out", extra)
    result = {
        "benchmark": "demo_throughput", "smoke": args.smoke, "job": str(JOB.relative_to(ROOT)), "demo_spec": spec,
        "max_length": spec["method"]["max_length"], "machine": info, "bare": b, "demo": d,
        "ratios": {"demo_over_bare": d["rows_per_s"] / b["rows_per_s"],
                   "steady_over_bare": (d["steady_rows_per_s"] or 0) / b["rows_per_s"]},
    }
    name = "demo_throughput_smoke" if args.smoke else "demo_throughput"
    json_path, md_path = write_results(name, result, markdown(result), args.out_dir)
    print(f"[demo] report {d['rows_per_s']:.1f} rows/s, steady {_fmt(d['steady_rows_per_s'])}, bare {b['rows_per_s']:.1f}; "
          f"wrote {json_path} and {md_path}", flush=True)
    return result


if __name__ == "__main__":
    main()
