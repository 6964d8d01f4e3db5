"""Shared helpers of the CPU benchmarks: machine description, result writers, R8 replication, and
peak-memory sampling of a whole process tree (driver + raylet + Ray workers) in a background thread.

Only the standard library, psutil and pyarrow at import time; torch/ray/transformers versions are read
from package metadata (nothing heavy is imported to describe the machine).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
R8_TEST = ROOT / "data" / "reuters_r8" / "test.parquet"
R8_TRAIN = ROOT / "data" / "reuters_r8" / "train.parquet"
R8_LABELS = ["earn", "acq", "crude", "trade", "money-fx", "interest", "ship", "grain"]
TWEETS = ROOT / "data" / "vader_tweets" / "all.parquet"
#: the tweets' labels with the descriptions the shipped Qwen tweet jobs use (jobs/tweets_prompt_qwen_vllm.yaml)
TWEET_LABEL_SPECS = [
    {"name": "positive", "description": "The author expresses a favourable feeling"},
    {"name": "negative", "description": "The author expresses an unfavourable feeling"},
    {"name": "neutral", "description": "No clear feeling either way"},
]
#: R8's labels with the descriptions the shipped LLM jobs use (jobs/reuters_prompt_vllm.yaml)
R8_LABEL_SPECS = [
    {"name": "earn", "description": "Corporate earnings, profits, dividends"},
    {"name": "acq", "description": "Mergers, acquisitions, stake purchases"},
    {"name": "crude", "description": "Crude oil markets and production"},
    {"name": "trade", "description": "International trade, tariffs, trade balances"},
    {"name": "money-fx", "description": "Currency and money markets"},
    {"name": "interest", "description": "Interest rates and central bank rate moves"},
    {"name": "ship", "description": "Shipping, ports, vessels"},
    {"name": "grain", "description": "Grain and agricultural commodities"},
]
# The same labels described the way Reuters used them (from the category definitions and train-split examples,
# written after seeing which kinds of llm_quality's R8 sample the short ones missed: docs/llm_quality.md): terse
# earnings tables are `earn`, currency accords are `money-fx`, attacks on Gulf shipping are `ship`.
# llm_quality.py measures both sets (configs ending in `_short` use the one above).
R8_LABEL_SPECS_DETAILED = [
    {"name": "earn", "description": "Company results and payouts: quarterly or annual earnings reports (often terse "
     "tables such as 'qtr net shr cts vs cts, revs mln vs mln'), profit or loss forecasts, dividends"},
    {"name": "acq", "description": "Mergers and acquisitions: takeover bids, buying or selling a company, unit or "
     "stake, tender offers, merger agreements"},
    {"name": "crude", "description": "Crude oil: oil prices, OPEC output and quotas, oil production and reserves, "
     "refineries, oil exploration"},
    {"name": "trade", "description": "International trade: exports and imports, trade deficits and surpluses, tariffs, "
     "trade disputes and talks between countries"},
    {"name": "money-fx", "description": "Foreign exchange and money markets: exchange rates, dollar/yen/mark moves, "
     "central bank intervention or operations in currency and money markets, G7 / Louvre / Paris currency accords"},
    {"name": "interest", "description": "Interest rates: prime, base and lending rates, central bank discount rate "
     "cuts or rises, the rate outlook"},
    {"name": "ship", "description": "Shipping: ships, tankers and ferries, ports and canals, dock and seamen strikes, "
     "attacks on shipping in the Gulf, freight"},
    {"name": "grain", "description": "Grain and farm commodities: wheat, corn, rice, cereals, crops, farm policy, "
     "grain export deals and tenders"},
]
MIB = 1024 * 1024


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, load and the versions that decide the numbers."""
    import psutil

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable_cores(),
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_avg_1_5_15_at_start": [round(x, 2) for x in load] if load else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("torch", "transformers", "ray", "pyarrow", "numpy", "tokenizers", "batchlabel")
        },
    }


def write_results(name: str, result: dict[str, Any], markdown: str, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` into ``out_dir`` (default benchmarks/results)."""
    out_dir = Path(out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats get 3 significant-ish digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_markdown(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    return (
        f"Machine: {info['cpu_model']}, {info['usable_cores']} usable cores, {info['ram_gib']} GiB RAM, "
        f"load average at start {info['load_avg_1_5_15_at_start']}; Python {info['python']}; {versions}."
    )


def replicate_r8(rows: int, path: Path, source: Path = R8_TEST, chunk_rows: int = 50_000) -> Path:
    """R8 rows repeated (in file order) to exactly ``rows`` rows with new unique ids, written in chunks
    so that a 1M-row file never sits in memory whole. Columns: id, text, label."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(source, columns=["id", "text", "label"])
    ids = table.column("id").to_pylist()
    texts, labels = table.column("text"), table.column("label")
    n = table.num_rows
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.string())])
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk_rows):
            stop = min(rows, start + chunk_rows)
            index = pa.array([i % n for i in range(start, stop)], pa.int64())
            new_ids = [f"{ids[i % n]}-r{i // n}" for i in range(start, stop)]
            writer.write_table(
                pa.table(
                    {"id": pa.array(new_ids, pa.string()), "text": texts.take(index), "label": labels.take(index)},
                    schema=schema,
                ),
                row_group_size=10_000,
            )
    return path


@dataclass
class TreeMemory:
    """Peak memory of a process and all its descendants, sampled every ``interval_s`` seconds for the first
    ``fine_for_s`` seconds and every ``late_interval_s`` after that (start-up peaks are brief; steady state is flat).

    ``peak_rss_mib``: the largest sum of RSS over the tree (counts shared pages, e.g. the Ray object
    store mapping, once per process that touched them: an upper bound). ``peak_pss_mib``: the largest
    sum of PSS (shared pages split between their users: the tree's real footprint), sampled every
    ``pss_every`` samples because it reads /proc/PID/smaps_rollup. ``peak_root_rss_mib``: the root alone.
    """

    pid: int
    interval_s: float = 0.2
    late_interval_s: float = 1.0
    fine_for_s: float = 30.0
    pss_every: int = 5
    peak_rss_mib: float = 0.0
    peak_pss_mib: float = 0.0
    peak_root_rss_mib: float = 0.0
    max_processes: int = 0
    samples: int = 0
    process_names: set[str] = field(default_factory=set)
    _cpu: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (role, last seen user+system s)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self, with_pss: bool) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rss = pss = 0
        alive = 0
        for proc in procs:
            try:
                if with_pss:
                    info = proc.memory_full_info()
                    pss += getattr(info, "pss", info.rss)
                else:
                    info = proc.memory_info()
                rss += info.rss
                if proc.pid == self.pid:
                    self.peak_root_rss_mib = max(self.peak_root_rss_mib, info.rss / MIB)
                self.process_names.add(proc.name())
                times = proc.cpu_times()
                self._cpu[proc.pid] = (self._role(proc), times.user + times.system)
                alive += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self.samples += 1
        self.max_processes = max(self.max_processes, alive)
        self.peak_rss_mib = max(self.peak_rss_mib, rss / MIB)
        if with_pss:
            self.peak_pss_mib = max(self.peak_pss_mib, pss / MIB)

    def _role(self, proc) -> str:
        """'root', a Ray process title (``ray::MapWorker(...)``, ``ray::IDLE``) or the executable's name."""
        if proc.pid == self.pid:
            return "root"
        # read every time: a Ray worker retitles itself (python3 → ray::IDLE → ray::MapWorker(...)); the last wins
        cmd = proc.cmdline()
        title = cmd[0] if cmd else proc.name()
        return title.split(" ")[0][:80] if title.startswith("ray::") else proc.name()

    def _loop(self) -> None:
        count = 0
        started = time.perf_counter()
        while not self._stop.is_set():
            self._sample(with_pss=count % self.pss_every == 0)
            count += 1
            # fine sampling through start-up, then slower: reading /proc (smaps_rollup above all) of a ~20-process
            # Ray tree every 0.2 s costs ~5 % of a core, which the measured run would lose on a 2-core machine
            late = time.perf_counter() - started > self.fine_for_s
            self._stop.wait(max(self.interval_s, self.late_interval_s) if late else self.interval_s)

    def start(self) -> "TreeMemory":
        self._thread = threading.Thread(target=self._loop, name=f"tree-memory-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        return {
            "peak_tree_rss_mib": round(self.peak_rss_mib, 1),
            "peak_tree_pss_mib": round(self.peak_pss_mib, 1),
            "peak_root_rss_mib": round(self.peak_root_rss_mib, 1),
            "max_processes": self.max_processes,
            "samples": self.samples,
            "sample_interval_s": [self.interval_s, self.late_interval_s, self.fine_for_s],  # fine, late, fine for (s)
            "process_names": sorted(self.process_names),
            # CPU seconds (user + system) per process role, as last sampled (a process's final < interval_s is lost)
            "cpu_s_by_role": self.cpu_by_role(),
            "cpu_s_total": round(sum(seconds for _, seconds in self._cpu.values()), 1),
        }

    def cpu_by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for role, seconds in self._cpu.values():
            totals[role] = totals.get(role, 0.0) + seconds
        return {role: round(seconds, 1) for role, seconds in sorted(totals.items(), key=lambda kv: -kv[1])}


@dataclass
class Measured:
    returncode: int
    wall_s: float
    memory: dict[str, Any]
    stdout: str
    stderr: str


def run_measured(cmd: Sequence[str], env: dict[str, str] | None = None, timeout_s: float | None = None,
                 cwd: Path | None = None, interval_s: float = 0.2) -> Measured:
    """Run ``cmd`` as a subprocess; wall time around it and the peak memory of its process tree."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})}, cwd=str(cwd or ROOT),
    )
    sampler = TreeMemory(proc.pid, interval_s=interval_s).start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        sampler.stop()
        raise RuntimeError(f"{' '.join(cmd)} ran past {timeout_s} s:\n{stderr[-3000:]}") from None
    wall = time.perf_counter() - started
    memory = sampler.stop()
    return Measured(proc.returncode, wall, memory, stdout, stderr)


def batchlabel_exe() -> list[str]:
    """The `batchlabel` console script of this interpreter's environment."""
    exe = Path(sys.executable).with_name("batchlabel")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from batchlabel.cli import main; main()"]


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def quiet_env() -> dict[str, str]:
    return {
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_OFFLINE": "1",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")] if p),
    }
