"""Runner ceiling: what batchlabel itself costs around a labeler that does nothing, before vs after a change.

A no-op labeler (`method: custom`, batchlabel.testing.noop:NoopLabeler: first label, no model) runs over
synthetic corpora (ids `id-N`, texts `article N about markets and trade`), so everything measured is the
runner: planning, reading, moving rows through Ray, the actor's per-row bookkeeping, writing, manifest, report.

Cases (`--cases`, comma-separated; results accumulate in results/runner_ceiling.json/.md, one case at a time):
    e2e_1e6_single, e2e_1e6_many, e2e_1e7_single, e2e_1e7_many   `batchlabel run` end to end
    plan_1e8                                                        `batchlabel run --dry-run` (planning alone)
"many" = 100 files. Every e2e case also measures planning of its corpus.

Each case runs every side (`--sides before=/work/before/src,after=src`: PYTHONPATH of the driver, inherited by
the local Ray it starts) back to back in the same invocation. The before side is a git worktree of the old
commit (`git worktree add /work/before 95ed13d`; the no-op labeler module is copied into it when missing).

What is measured per run (driver = the `batchlabel` process; tree = it and every process below it: GCS, raylet,
Ray workers):
- wall seconds of the subprocess (CLI start, Ray start, everything) and rows / wall = end-to-end rows/s;
- driver CPU seconds and peak RSS from getrusage(RUSAGE_SELF) at exit (atexit hook in a tiny wrapper), and the
  tree's CPU seconds from sampling every process's cpu_times (common.TreeMemory, 0.5 s): driver CPU share =
  driver CPU / tree CPU;
- bytes through the driver: the driver's /proc/self/io rchar + wchar at exit minus their values after the wrapper
  imported the modules the CLI needs (so reading Python files is left out): every read()/write()/send()/recv()
  syscall of the run: input files, output files it writes, gRPC and logs to Ray. Rows that reach the driver from Ray's object store
  arrive by shared memory (mmap) and are NOT in rchar, so the old driver's share shows up as the part files it
  writes (wchar); `driver_mapped_rows` (rows the driver received, = rows it committed in the old code) is given too.
- runs past `--timeout-s` (or, for planning, past `--rss-cap-mib` of driver RSS) are killed; for e2e the rows
  committed by then give a lower bound on rows/s.

    python benchmarks/runner_ceiling.py --generate-only --cases plan_1e8          # data (cached in --work-dir)
    flock /work/cpu.lock python benchmarks/runner_ceiling.py --cases e2e_1e6_single,e2e_1e6_many
    python benchmarks/runner_ceiling.py --smoke --out-dir /tmp/r                   # CI: tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RESULTS,
    ROOT,
    TreeMemory,
    machine,
    machine_markdown,
    md_table,
    write_results,
)

CASES: dict[str, dict[str, Any]] = {
    "e2e_1e6_single": {"kind": "run", "rows": 10**6, "files": 1},
    "e2e_1e6_many": {"kind": "run", "rows": 10**6, "files": 100},
    "e2e_1e7_single": {"kind": "run", "rows": 10**7, "files": 1},
    "e2e_1e7_many": {"kind": "run", "rows": 10**7, "files": 100},
    "plan_1e8": {"kind": "plan", "rows": 10**8, "files": 100},
    # the same run without the report (eval.enabled: false): what the report costs the driver
    "e2e_1e7_single_noreport": {"kind": "run", "rows": 10**7, "files": 1, "report": False},
}
SMOKE_CASES: dict[str, dict[str, Any]] = {
    "e2e_smoke_many": {"kind": "run", "rows": 3000, "files": 3},
    "plan_smoke": {"kind": "plan", "rows": 6000, "files": 3},
}
NOOP = "batchlabel.testing.noop:NoopLabeler"
NOOP_FILE = ROOT / "src" / "batchlabel" / "testing" / "noop.py"
LABELS = ["a", "b"]
DRIVER = r"""
import atexit, importlib, json, os, resource, sys
def _io():
    try:
        with open("/proc/self/io") as f:
            return {k.strip(): int(v) for k, v in (line.split(":") for line in f)}
    except OSError:
        return {}
# import what the CLI will import anyway first, so that the I/O baseline excludes reading Python modules
for name in ("yaml", "pydantic", "typer", "numpy", "pyarrow.parquet", "pyarrow.csv", "ray", "ray.data",
             "batchlabel.cli", "batchlabel.run.pipeline"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
_base = _io()
def _dump():
    io = _io()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.environ["BL_CEILING_STATS"], "w") as f:
        json.dump({"cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mib": ru.ru_maxrss / 1024,
                   "io": {k: v - _base.get(k, 0) for k, v in io.items()}}, f)
atexit.register(_dump)
sys.argv = ["batchlabel", *sys.argv[1:]]
from batchlabel.cli import main
main()
"""


def generate(directory: Path, rows: int, files: int, row_group: int) -> Path:
    """Parquet files with unique ids, cached: a `_done` marker means the corpus is complete."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if (directory / "_done").exists():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    per_file, chunk = rows // files, min(row_group * 10, 10**6)
    started = time.perf_counter()
    for index in range(files):
        first, last = index * per_file, (index + 1) * per_file if index < files - 1 else rows
        with pq.ParquetWriter(directory / f"part-{index:05d}.parquet", pa.schema([("id", pa.string()),
                                                                                  ("text", pa.string())])) as writer:
            for start in range(first, last, chunk):
                numbers = pc.cast(pa.array(np.arange(start, min(last, start + chunk))), pa.string())
                ids = pc.binary_join_element_wise("id", numbers, "-")
                texts = pc.binary_join_element_wise("article", numbers, "about markets and trade", " ")
                writer.write_table(pa.table({"id": ids, "text": texts}), row_group_size=row_group)
    (directory / "_done").write_text(json.dumps({"rows": rows, "files": files, "s": time.perf_counter() - started}))
    return directory


def job_yaml(work: Path, corpus: Path, output: Path, args: argparse.Namespace, report: bool = True) -> Path:
    import yaml

    job = {
        "name": "runner-ceiling",
        "input": {"path": str(corpus)},
        "labels": LABELS,
        "method": {"name": "custom", "labeler": NOOP},
        "runtime": {"actors": args.actors, "batch_size": args.batch_size},
        "output": {"path": str(output), "shard_rows": args.shard_rows},
        "eval": {"enabled": report},
    }
    path = work / f"job-{output.name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for proc in reversed(procs):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def measure(args_cli: list[str], src: str, work: Path, timeout_s: float, rss_cap_mib: float | None) -> dict:
    """Run the CLI under the wrapper; wall, driver stats (exact, at exit), tree CPU (sampled)."""
    stats = work / f"stats-{time.monotonic_ns()}.json"
    env = {**os.environ, "PYTHONPATH": src, "BL_CEILING_STATS": str(stats), "HF_HUB_OFFLINE": "1",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args_cli], env=env, cwd=str(work), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sampler = TreeMemory(proc.pid, interval_s=0.5, late_interval_s=0.5, pss_every=10**9).start()
    killed = None
    while proc.poll() is None:
        time.sleep(0.2)
        elapsed = time.perf_counter() - started
        if elapsed > timeout_s:
            killed = f"timeout {timeout_s:.0f} s"
        elif rss_cap_mib and sampler.peak_root_rss_mib > rss_cap_mib:
            killed = f"driver RSS over {rss_cap_mib:.0f} MiB after {elapsed:.0f} s"
        if killed:
            _kill_tree(proc.pid)
            break
    output = proc.communicate()[0]
    wall = time.perf_counter() - started
    memory = sampler.stop()
    _kill_tree(proc.pid)  # a local Ray left behind by a killed driver
    driver = json.loads(stats.read_text()) if stats.exists() else None
    tree_cpu = memory["cpu_s_total"]
    result: dict[str, Any] = {"returncode": proc.returncode, "killed": killed, "wall_s": round(wall, 2),
                              "tree_cpu_s": tree_cpu, "cpu_s_by_role": memory["cpu_s_by_role"],
                              "peak_tree_rss_mib": memory["peak_tree_rss_mib"]}
    if driver is not None:
        sampled_driver = memory["cpu_s_by_role"].get("root", 0.0)
        tree_cpu = max(tree_cpu - sampled_driver + driver["cpu_s"], driver["cpu_s"])
        io = driver["io"]
        result.update(driver_cpu_s=round(driver["cpu_s"], 2), driver_peak_rss_mib=round(driver["maxrss_mib"], 1),
                      tree_cpu_s=round(tree_cpu, 1), driver_cpu_share=round(driver["cpu_s"] / tree_cpu, 4),
                      driver_rchar=io.get("rchar"), driver_wchar=io.get("wchar"),
                      driver_io_mib=round((io.get("rchar", 0) + io.get("wchar", 0)) / 2**20, 1))
    else:  # killed: the sampler's view (last samples)
        result.update(driver_cpu_s=memory["cpu_s_by_role"].get("root"), driver_peak_rss_mib=memory["peak_root_rss_mib"])
    if proc.returncode != 0 and not killed:
        result["output_tail"] = output[-2000:]
    return result


def committed_rows(output: Path) -> int:
    """Rows in committed shards (commit markers), whatever the run's state."""
    rows = 0
    for marker in (output / "_batchlabel" / "shards").glob("*.json"):
        try:
            rows += int(json.loads(marker.read_text()).get("rows", 0))
        except (OSError, ValueError):
            continue
    return rows


def run_case(name: str, case: dict, sides: dict[str, str], args: argparse.Namespace) -> dict:
    corpus = generate(Path(args.work_dir) / f"corpus_{case['rows']}_{case['files']}", case["rows"], case["files"],
                      args.row_group)
    work = Path(tempfile.mkdtemp(prefix="bl-ceiling-", dir=args.work_dir))
    out: dict[str, Any] = {"case": name, **case, "machine": machine(), "sides": {}}
    try:
        for side, src in sides.items():
            load = [round(x, 2) for x in os.getloadavg()]
            print(f"[{name}] {side}: planning ...", flush=True)
            output = work / f"out-{side}"
            job = job_yaml(work, corpus, output, args, report=case.get("report", True))
            plan_timeout = args.plan_timeout_s if case["kind"] == "plan" else args.timeout_s
            plan = measure(["run", str(job), "--dry-run"], src, work, plan_timeout, args.rss_cap_mib)
            row: dict[str, Any] = {"src": src, "load_avg_before": load, "plan": plan}
            if case["kind"] == "run":
                print(f"[{name}] {side}: plan {plan['wall_s']} s; labeling ...", flush=True)
                timeout = args.timeout_s if side != "before" else min(args.timeout_s, args.before_timeout_s)
                run = measure(["run", str(job), "--quiet"], src, work, timeout, None)
                rows = committed_rows(output)
                run["rows_committed"] = rows
                run["rows_per_s_e2e"] = round(rows / run["wall_s"], 1) if run["wall_s"] else None
                run["complete"] = run["returncode"] == 0 and rows == case["rows"]
                run["driver_mapped_rows"] = rows if side == "before" else None
                report = output / "report.json"
                if report.exists():
                    info = json.loads(report.read_text()).get("run", {})
                    run["report_rows_per_s"] = info.get("rows_per_s")
                    run["report_steady_rows_per_s"] = info.get("steady_rows_per_s")
                    run["report_first_batch_s"] = info.get("first_batch_s")
                row["run"] = run
                print(f"[{name}] {side}: {rows} rows in {run['wall_s']} s ({run['rows_per_s_e2e']} rows/s)"
                      f"{'; killed: ' + run['killed'] if run['killed'] else ''}", flush=True)
            row["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
            out["sides"][side] = row
            shutil.rmtree(output, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _fmt_plan(plan: dict) -> str:
    if plan.get("killed"):
        return f"killed ({plan['killed']})"
    return f"{plan['wall_s']:.1f}" if plan["returncode"] == 0 else f"failed ({plan['returncode']})"


def markdown(result: dict) -> str:
    lines = ["# Runner ceiling: no-op labeler, before vs after", "", machine_markdown(result["machine"]), "",
             ("Targets (2-core box): planning 1e8 rows < 60 s and < 1 GiB driver RSS; end to end >= 20,000 rows/s; "
             "driver CPU < 10 % of the run's CPU."), ""]
    rows = []
    for name, case in result["cases"].items():
        for side, row in case["sides"].items():
            plan, run = row["plan"], row.get("run") or {}
            rows.append([
                name, side, f"{case['rows']:,}", case["files"], _fmt_plan(plan), plan.get("driver_peak_rss_mib"),
                run.get("wall_s"), (f"{run['rows_per_s_e2e']:,.0f}" + ("" if run.get("complete") else " (partial)"))
                if run else None,
                run.get("report_steady_rows_per_s") and round(run["report_steady_rows_per_s"]),
                f"{100 * run['driver_cpu_share']:.1f} %" if run.get("driver_cpu_share") is not None else None,
                run.get("driver_peak_rss_mib"), run.get("driver_io_mib"), run.get("tree_cpu_s"),
                f"{row['load_avg_before'][0]}→{row['load_avg_after'][0]}", f"{row['measured_at']} ({row['invocation']})",
            ])
    lines.append(md_table(["case", "side", "rows", "files", "plan s", "plan driver RSS MiB", "run wall s",
                           "rows/s e2e", "steady rows/s", "driver CPU share", "run driver RSS MiB",
                           "driver I/O MiB (rchar+wchar)", "tree CPU s", "load 1-min", "measured (invocation)"], rows))
    lines += ["", ("- plan = `batchlabel run --dry-run` (CLI start + imports + planning); e2e = `batchlabel run` "
              "(CLI, local Ray start, plan, label, commit, manifest, report); rows/s e2e = committed rows / wall."),
              "- (partial): killed at the timeout; rows/s from the rows committed by then (a lower bound).",
              ("- driver I/O: the driver's rchar+wchar at exit (syscall bytes: files and sockets); rows mapped from "
              "the object store are not in it (see the script's docstring).")]
    roles = []
    for name, case in result["cases"].items():
        for side, row in case["sides"].items():
            run = row.get("run")
            if run and run.get("rows_committed"):
                per = 1e6 / run["rows_committed"]
                groups = role_groups(run["cpu_s_by_role"], run.get("driver_cpu_s"))
                roles.append([name, side, *(round(groups[g] * per, 1) for g in ROLE_GROUPS)])
    if roles:
        lines += ["", "CPU seconds per 10^6 committed rows, by process role (sampled; start-up included):", "",
                  md_table(["case", "side", *ROLE_GROUPS], roles),
                  "", ("- tasks = Ray workers running read/write tasks (titled `ray::Read…`, `ray::MapBatches(read_unit)…`, "
                       "`ray::Write…`, or `ray::IDLE` once done); services = raylet, GCS, dashboard/runtime-env agents, "
                       "log monitor and Ray Data's helper actors (stats, autoscaling, locations, our commit ledger).")]
    return "\n".join(lines)


ROLE_GROUPS = ("driver", "labeling actor", "tasks", "services")


def role_groups(by_role: dict[str, float], driver_exact: float | None) -> dict[str, float]:
    """Sum sampled CPU seconds per process role into driver / labeling actor / read+write tasks / Ray services."""
    groups = dict.fromkeys(ROLE_GROUPS, 0.0)
    for role, seconds in by_role.items():
        if role == "root":
            groups["driver"] += driver_exact if driver_exact is not None else seconds
        elif role.startswith("ray::MapWorker"):
            groups["labeling actor"] += seconds
        elif role.startswith(("ray::Read", "ray::MapBatches", "ray::Write", "ray::IDLE", "ray::_merge", "ray::Map")):
            groups["tasks"] += seconds
        else:
            groups["services"] += seconds
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="e2e_1e6_single,e2e_1e6_many")
    parser.add_argument("--sides", default=f"before=/work/before/src,after={ROOT / 'src'}",
                        help="name=PYTHONPATH pairs, run in this order")
    parser.add_argument("--work-dir", default="/tmp/bl-ceiling", help="synthetic corpora (cached) + scratch")
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("--name", default="runner_ceiling", help="results file stem (cases accumulate in it)")
    parser.add_argument("--shard-rows", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--row-group", type=int, default=50_000)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=420)
    parser.add_argument("--before-timeout-s", type=float, default=300, help="cap of the before side's e2e runs")
    parser.add_argument("--plan-timeout-s", type=float, default=240)
    parser.add_argument("--rss-cap-mib", type=float, default=6144, help="kill a planner whose driver passes this")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI); writes <out-dir>/runner_ceiling_smoke.*")
    args = parser.parse_args()
    table = SMOKE_CASES if args.smoke else CASES
    if args.smoke:
        args.name, args.shard_rows, args.batch_size, args.row_group = "runner_ceiling_smoke", 1000, 500, 500
        args.cases = ",".join(SMOKE_CASES)
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in table]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(table)}")
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    if args.generate_only:
        for name in names:
            case = table[name]
            generate(Path(args.work_dir) / f"corpus_{case['rows']}_{case['files']}", case["rows"], case["files"],
                     args.row_group)
        return
    sides = dict(pair.split("=", 1) for pair in args.sides.split(","))
    for src in sides.values():  # the no-op labeler must be importable from every side's tree
        target = Path(src) / "batchlabel" / "testing" / "noop.py"
        if not target.exists():
            shutil.copy(NOOP_FILE, target)
    json_path = Path(args.out_dir) / f"{args.name}.json"
    result = json.loads(json_path.read_text()) if json_path.exists() and not args.smoke else {"cases": {}}
    invocation = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for name in names:
        case = run_case(name, table[name], sides, args)
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        for row in case["sides"].values():
            row["measured_at"], row["invocation"] = stamp, invocation
        previous = result["cases"].get(name, {}).get("sides", {})  # sides measured by an earlier invocation stay
        case["sides"] = {**previous, **case["sides"]}
        result["cases"][name] = case
        result["machine"] = case["machine"]
        result["settings"] = {"shard_rows": args.shard_rows, "batch_size": args.batch_size, "actors": args.actors,
                              "row_group": args.row_group, "timeout_s": args.timeout_s,
                              "before_timeout_s": args.before_timeout_s, "plan_timeout_s": args.plan_timeout_s,
                              "rss_cap_mib": args.rss_cap_mib, "sides": sides, "smoke": args.smoke}
        write_results(args.name, result, markdown(result), Path(args.out_dir))
    print(markdown(result))


if __name__ == "__main__":
    main()
