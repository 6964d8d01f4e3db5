"""Bytes read from S3 and wall time of `batchlabel eval`, `review export` and a nightly run over 30 past nights,
before vs after the streamed, projected reads of issue 28 (io/reads.py), in one run.

S3 is a real moto_server behind a loopback proxy (tests/flaky_proxy.py with no faults) that counts the body
bytes of every answer: "bytes read" = GET bodies sent to the measured command (its driver and, for the night,
its Ray workers). Each side runs the real CLI in a subprocess with PYTHONPATH=<side>/src; the before side is a
git worktree of HEAD (`git worktree add --detach /tmp/read_before HEAD`, made when missing). Each side reads
data written by its own sink (the after side's part files have row groups of 8,192 rows), generated from the
same seed:

- output: OUTPUT_ROWS labeled rows (R8 texts, `output.keep_text: true`, the columns of an 8-label run), shards
  of SHARD_ROWS rows. `batchlabel eval OUTPUT` (median of REPS) and `batchlabel review export OUTPUT --below 0.5
  --sample-above 200 --format csv` (median of REPS).
- nightly: 30 committed nights (night 1 labels the CORPUS_ROWS corpus, each later night DELTA new or edited
  rows; the shipped nightly job's columns, no text) + tonight's corpus with DELTA more changes; one
  `batchlabel nightly` (no-op labeler: the night's Ray run labels the delta without a model) per side.

    flock /work/cpu.lock python benchmarks/read_bytes.py            # results/read_bytes.json + .md
    python benchmarks/read_bytes.py --smoke --out-dir /tmp/r        # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import R8_LABELS, R8_TEST, R8_TRAIN, ROOT, batchlabel_exe, machine, machine_markdown, md_table, quiet_env, write_results  # noqa: E402

BEFORE = Path("/tmp/read_before")
NOOP = "batchlabel.testing.noop:NoopLabeler"
SIZES = {"full": dict(OUTPUT_ROWS=60_000, SHARD_ROWS=10_000, CORPUS_ROWS=20_000, DELTA=400, NIGHTS=30, REPS=3),
         "smoke": dict(OUTPUT_ROWS=3_000, SHARD_ROWS=1_000, CORPUS_ROWS=600, DELTA=20, NIGHTS=3, REPS=1)}
FIRST_NIGHT = dt.date(2026, 10, 1)
KINDS = {"/part-": "part files", "corpus.parquet": "corpus Parquet", "delta.parquet": "staged delta",
         ".json": "JSON (manifests, markers, drift)", ".npz": "id hashes"}


# ---- data, generated in a subprocess of each side (its own sink) -------------------------------------------

def _texts():
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(p, columns=["text", "label"]) for p in (R8_TRAIN, R8_TEST)])
    return table.column("text").to_pylist(), table.column("label").to_pylist()


def _labeled(spec, ids, texts, gold, rng, fingerprint, extra=None):
    """Rows with the columns a labeling run writes for ``spec`` (run/actor.py output_schema)."""
    import numpy as np
    import pyarrow as pa

    from batchlabel.hashing import text_hash
    from batchlabel.run.actor import output_schema

    n, k = len(ids), len(R8_LABELS)
    probs = rng.dirichlet(np.ones(k) * 0.05, n).astype(np.float32)  # ~5 % of rows below 0.5
    top = probs.argmax(1)
    error = [("engine: timeout" if rng.random() < 0.005 else None) for _ in range(n)]
    columns = {"id": ids, "label": [None if e else R8_LABELS[i] for e, i in zip(error, top)],
               "confidence": probs.max(1), "error": error, "truncated": [False] * n,
               "labeler_fingerprint": [fingerprint] * n, "text_hash": [text_hash(t) for t in texts], "gold": gold,
               "text": texts, **{f"prob_{name}": probs[:, j] for j, name in enumerate(R8_LABELS)}, **(extra or {})}
    schema = output_schema(spec, {name: pa.string() for name in extra or {}})
    return pa.table({f.name: pa.array(columns.get(f.name, [None] * n), f.type) for f in schema}, schema=schema)


def _commit(output, storage, spec, tables, name):
    import pyarrow as pa

    from batchlabel.io.sink import ShardSink, commit_shard

    keys = [f"00000-{i:05d}" for i in range(len(tables))]
    info = {"job": name, "method": "custom", "labels": R8_LABELS, "spec_hash": name, "plan": name}
    sink = ShardSink(output, storage, keys, info)
    sink.open(restart=False)
    start = 0
    for key, table in zip(keys, tables):
        n = table.num_rows
        table = table.append_column("_shard", pa.array([0] * n, pa.int64())).append_column(
            "_row", pa.array(range(start, start + n), pa.int64())).append_column("_shard_rows", pa.array([n] * n, pa.int64()))
        sink.record(commit_shard(output, storage, key, table))
        start += n
    sink.finish()


def _job(keep_text: bool, output: str, input_path: str = "unused.parquet") -> dict:
    return {"name": "bench", "input": {"path": input_path, "gold_column": "label"}, "labels": R8_LABELS,
            "method": {"name": "custom", "labeler": NOOP}, "runtime": {"actors": 1, "batch_size": 256},
            "output": {"path": output, "shard_rows": 1000, "keep_text": keep_text}}


def make_data(bucket: str, side: str, size: dict) -> None:
    """Write the side's labeled output, nightly history and tonight's corpus (through the side's own sink)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batchlabel.config import parse_job
    from batchlabel.io.storage import StorageSettings, join
    from batchlabel.methods import labeler_fingerprint

    storage, rng = StorageSettings(), np.random.default_rng(0)
    pool, labels = _texts()
    output = f"{bucket}/{side}/output"
    spec = parse_job(_job(True, output))
    rows, shard = size["OUTPUT_ROWS"], size["SHARD_ROWS"]
    tables = []
    for start in range(0, rows, shard):
        index = range(start, min(rows, start + shard))
        tables.append(_labeled(spec, [f"doc-{i:07d}" for i in index], [pool[i % len(pool)] for i in index],
                               [labels[i % len(pool)] for i in index], rng, "bench-fp"))
    _commit(output, storage, spec, tables, "bench-output")

    nightly = f"{bucket}/{side}/nightly"
    night_spec = parse_job(_job(False, nightly, f"{bucket}/{side}/corpus.parquet"))
    fingerprint = labeler_fingerprint(night_spec, storage)
    current = {f"c-{i:06d}": (pool[i % len(pool)], labels[i % len(pool)]) for i in range(size["CORPUS_ROWS"])}
    changed = list(current)
    for night in range(size["NIGHTS"] + 1):
        if night:  # DELTA/2 edited texts and DELTA/2 new ids
            edited = rng.choice(sorted(current), size["DELTA"] // 2, replace=False)
            changed = [str(k) for k in edited] + [f"n{night:02d}-{i:04d}" for i in range(size["DELTA"] // 2)]
            for j, key in enumerate(changed):
                text, gold = current.get(key) or (pool[(night * 997 + j) % len(pool)], labels[(night * 997 + j) % len(pool)])
                current[key] = (f"{text} (rev {night})" if key in current else text, gold)
        if night == size["NIGHTS"]:  # tonight: the corpus only
            break
        date = (FIRST_NIGHT + dt.timedelta(days=night)).isoformat()
        table = _labeled(night_spec, changed, [current[k][0] for k in changed], [current[k][1] for k in changed], rng,
                         fingerprint, {"nightly_reason": ["new" if night == 0 else "changed_text"] * len(changed)})
        partition = join(nightly, f"date={date}")
        _commit(partition, storage, night_spec, [table.slice(i, 1000) for i in range(0, table.num_rows, 1000)], f"night-{date}")
        drift = {"date": date, "fingerprint": fingerprint, "gold": None, "label_distribution": {"earn": 1.0}}
        storage.write_bytes(join(partition, "drift.json"), json.dumps(drift).encode())
    corpus = pa.table({"id": list(current), "text": [v[0] for v in current.values()], "label": [v[1] for v in current.values()]})
    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        pq.write_table(corpus, tmp.name)
        storage.write_bytes(f"{bucket}/{side}/corpus.parquet", Path(tmp.name).read_bytes())


# ---- the measured commands ---------------------------------------------------------------------------------

def _env(src: Path, endpoint: str, cache: Path) -> dict:
    return {**quiet_env(), "PYTHONPATH": str(src), "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1", "BATCHLABEL_CACHE": str(cache)}


def _measured(cmd: list[str], env: dict, proxy, ok=(0,), tonight: str = "-") -> dict:
    before_bytes, before_requests = proxy.bytes_read(), len(proxy.answered)
    started = time.perf_counter()
    env = {k: v for k, v in {**os.environ, **env}.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    if done.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    gets = [(path, size) for method, path, size in proxy.answered[before_requests:] if method == "GET"]
    by_kind: dict[str, int] = {}
    for path, size in gets:  # what was read: part files, staged/corpus Parquet, JSON (manifests, markers)...
        kind = next((name for key, name in KINDS.items() if key in path), "other")
        kind = f"{'past nights: ' if '/date=' in path and '/date=' + tonight not in path else ''}{kind}"
        by_kind[kind] = by_kind.get(kind, 0) + size
    return {"bytes_read": proxy.bytes_read() - before_bytes, "get_requests": len(gets), "wall_s": round(wall, 2),
            "bytes_by_kind": dict(sorted(by_kind.items())), "stdout_tail": done.stdout.strip().splitlines()[-1:]}


def _part_files(bucket: str, prefix: str) -> dict:
    from batchlabel.io.storage import StorageSettings

    urls = [u[5:] for u in StorageSettings().list_files(f"{bucket}/{prefix}", recursive=True) if "/part-" in u]
    sizes = [info.size for info in StorageSettings().s3().get_file_info(urls)]
    return {"files": len(sizes), "bytes": sum(sizes), "largest": max(sizes, default=0)}


def run_sides(sides: dict, bucket: str, proxy, size: dict, work: Path) -> dict:
    """eval and review export REPS times, the sides alternating (ABBA...); then one night per side."""
    exe = batchlabel_exe()
    env = {side: _env(src, proxy.endpoint, work / f"cache-{side}") for side, src in sides.items()}
    runs: dict = {(side, name): [] for side in sides for name in ("eval", "review_export")}
    for rep in range(size["REPS"]):
        for side in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
            output = f"{bucket}/{side}/output"
            runs[side, "eval"].append(_measured([*exe, "eval", output], env[side], proxy))
            runs[side, "review_export"].append(_measured(
                [*exe, "review", "export", output, "--below", "0.5", "--sample-above", "200", "--format", "csv",
                 "--out", f"{bucket}/{side}/review.csv"], env[side], proxy))
    result: dict = {side: {"src": str(src)} for side, src in sides.items()}
    for (side, name), done in runs.items():
        result[side][name] = {"bytes_read": done[0]["bytes_read"], "bytes_read_each_rep": [r["bytes_read"] for r in done],
                              "get_requests": done[0]["get_requests"],
                              "wall_s_median": statistics.median(r["wall_s"] for r in done),
                              "wall_s_each_rep": [r["wall_s"] for r in done], "last_line": done[-1]["stdout_tail"]}
    tonight = (FIRST_NIGHT + dt.timedelta(days=size["NIGHTS"])).isoformat()
    for side in sides:
        pipeline = work / f"pipeline-{side}.yaml"
        job = _job(False, "replaced", f"{bucket}/{side}/corpus.parquet")
        pipeline.write_text(json.dumps({"name": f"bench-{side}", "job": job, "output": f"{bucket}/{side}/nightly",
                                        "relabel_errors": True}))
        result[side]["nightly"] = _measured([*exe, "nightly", str(pipeline), "--date", tonight, "--quiet"], env[side],
                                            proxy, (0, 3), tonight)
        result[side]["data"] = {"output_parts": _part_files(bucket, f"{side}/output"),
                                "nightly_parts": _part_files(bucket, f"{side}/nightly")}
        print(side, json.dumps({k: v for k, v in result[side].items() if k != "src"}), flush=True)
    return result


# ---- the run -----------------------------------------------------------------------------------------------

def _moto(work: Path):
    from conftest import free_port, wait_for_port

    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return proc, f"http://127.0.0.1:{port}"


def _ensure_before(src: Path | None) -> Path:
    if src is not None:
        return src.resolve()
    if not (BEFORE / "src" / "batchlabel").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(BEFORE), "HEAD"], cwd=ROOT, check=True)
    return BEFORE / "src"


def _import_s(module: str) -> float:
    """Seconds to import ``module`` in a fresh interpreter (median of 3)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return round(statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                        check=True).stdout) for _ in range(3)), 2)


def _differing_files(before: Path, after: Path) -> list[str]:
    done = subprocess.run(["diff", "-rq", "-x", "__pycache__", str(before), str(after)], capture_output=True, text=True)
    return sorted(line.replace(str(before), "").replace(str(after), "") for line in done.stdout.splitlines())


def _parts(result: dict, key: str) -> str:
    return "; ".join(f"{side} {d['files']} files, {d['bytes'] / 2**20:.2f} MiB, largest {d['largest'] / 1024:.0f} KiB"
                     for side, d in ((side, result[side]["data"][key]) for side in ("before", "after")))


def markdown(result: dict) -> str:
    rows = []
    for command in ("eval", "review_export", "nightly"):
        b, a = result["before"][command], result["after"][command]
        wall = "wall_s_median" if command != "nightly" else "wall_s"
        rows.append([command.replace("_", " "), f"{b['bytes_read'] / 2**20:.2f}", f"{a['bytes_read'] / 2**20:.2f}",
                     f"{b['bytes_read'] / max(a['bytes_read'], 1):.1f}x", b["get_requests"], a["get_requests"],
                     f"{b[wall]:.1f}", f"{a[wall]:.1f}"])
    kinds = sorted(set(result["before"]["nightly"]["bytes_by_kind"]) | set(result["after"]["nightly"]["bytes_by_kind"]))
    nightly = [[kind] + [f"{result[side]['nightly']['bytes_by_kind'].get(kind, 0) / 2**20:.3f}" for side in ("before", "after")]
               for kind in kinds]
    size, load = result["sizes"], result["load_avg_1_5_15"]
    return "\n".join([
        "# Bytes read from S3: streamed, projected, pushed-down reads (issue 28)", "",
        machine_markdown(result["machine"]), "",
        f"Load average (1/5/15 min): {load['start']} at start, {load['end']} at the end.", "",
        md_table(["command", "MiB read before", "MiB read after", "less", "GETs before", "GETs after",
                  "wall s before", "wall s after"], rows), "",
        "The night's bytes by what was read (MiB):", "", md_table(["read", "before", "after"], nightly), "",
        f"- output: {size['OUTPUT_ROWS']:,} rows in shards of {size['SHARD_ROWS']:,}, keep_text, 8 labels; part files: "
        f"{_parts(result, 'output_parts')}. eval and review export ran {size['REPS']} times each, the sides "
        "alternating (before, after, after, before, ...): wall = median; " + ("the bytes were the same in every run."
        if all(len(set(result[side][c]["bytes_read_each_rep"])) == 1 for side in ("before", "after")
               for c in ("eval", "review_export")) else "the bytes varied between runs (see the JSON)."),
        f"- nightly: {size['NIGHTS']} committed nights (the first labels {size['CORPUS_ROWS']:,} rows, each later one "
        f"{size['DELTA']}; shards of 1,000 rows, no text); part files (tonight's included): "
        f"{_parts(result, 'nightly_parts')}; then one `batchlabel nightly` per side, its Ray run labeling "
        "tonight's delta with the no-op labeler. Its bytes include tonight's corpus input (staging) and the staged "
        "delta (labeling), the same code on both sides.",
        f"- imports on the after side's report path, fresh interpreter: {result['import_s']}.",
        "- bytes: GET bodies answered by moto_server to the command, counted at a loopback proxy "
        "(tests/flaky_proxy.py, no faults); wall: the subprocess, CLI start included.",
        f"- before: `{result['before']['src']}` (git worktree of {result['before_commit']}); files that differ "
        f"from after: {', '.join(result['differing_files']) or 'none'}.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--before", type=Path, default=None, help=f"src of the before side (default {BEFORE}/src)")
    parser.add_argument("--make-data", nargs=2, metavar=("BUCKET", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = SIZES["smoke" if args.smoke else "full"]
    if args.make_data:
        return make_data(*args.make_data, size)
    from flaky_proxy import FlakyProxy

    info, load_start = machine(), [round(x, 2) for x in os.getloadavg()]
    sides = {"before": _ensure_before(args.before), "after": ROOT / "src"}
    work = Path(tempfile.mkdtemp(prefix="read_bytes-"))
    moto, endpoint = _moto(work)
    try:
        import boto3

        creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench", "region_name": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, **creds).create_bucket(Bucket="bench")
        for side, src in sides.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--make-data", "s3://bench", side, *(["--smoke"] if args.smoke else [])],
                           env={**os.environ, **_env(src, endpoint, work / "cache")}, cwd=ROOT, check=True)
            print(f"{side}: data written in {time.perf_counter() - started:.1f} s", flush=True)
        os.environ.update(_env(ROOT / "src", endpoint, work / "cache"))
        result = {"benchmark": "read_bytes", "smoke": args.smoke, "sizes": size, "machine": info}
        with FlakyProxy(endpoint, fault_rate=0.0) as proxy:
            result.update(run_sides(sides, "s3://bench", proxy, size, work))
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    result["load_avg_1_5_15"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    result["before_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=sides["before"],
                                             capture_output=True, text=True).stdout.strip()
    result["differing_files"] = _differing_files(sides["before"], sides["after"])
    result["import_s"] = {module: _import_s(module) for module in ("sklearn.metrics", "markdown_it")}
    name = "read_bytes_smoke" if args.smoke else "read_bytes"
    paths = write_results(name, result, markdown(result), args.out_dir)
    print(markdown(result), "\n", *paths)


if __name__ == "__main__":
    main()
