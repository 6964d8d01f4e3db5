"""`batchlabel init PATH`: look at a corpus (Parquet / CSV / JSONL, local or s3://), propose its id, text and gold
columns and the labels, and write a commented job spec that `batchlabel run --dry-run` accepts.

Every choice has a flag; at a terminal the ones not given are asked (Enter keeps the proposal), elsewhere
(scripts, CI, `--yes`) the proposals are taken. The written spec is validated before it is written.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from batchlabel.cli.common import err, out
from batchlabel.errors import BatchlabelError

SAMPLE_ROWS = 5000  # rows of the first file looked at
MAX_GOLD_LABELS = 50  # more distinct values than this: not a label column
ID_NAMES = ("id", "doc_id", "document_id", "article_id", "row_id", "uuid", "guid", "key")
TEXT_NAMES = ("text", "body", "content", "article", "document", "tweet", "sentence", "review", "message", "abstract")
GOLD_NAMES = ("label", "labels", "gold", "category", "class", "topic", "target", "sentiment", "y", "tag")
METHODS = ("embed", "score", "prompt")
ENGINES = ("hf", "vllm", "openai")
DEFAULT_MODEL = "models/smollm2-135m"


@dataclass
class Sample:
    """The first rows of the corpus, as Python lists per column."""

    url: str
    format: str
    files: int
    columns: dict[str, list]


def read_sample(path: str, format: str, endpoint_url: str | None) -> Sample:
    """The first SAMPLE_ROWS rows of the first input file (through the same readers `run` uses)."""
    from batchlabel.config import InputSpec
    from batchlabel.io.formats import iter_text_tables, open_parquet
    from batchlabel.io.planning import list_input_files
    from batchlabel.io.storage import StorageSettings

    spec = InputSpec(path=path, format=format)
    storage = StorageSettings(endpoint_url=endpoint_url)
    files = list_input_files(spec, storage)
    first = files[0]
    if first.format == "parquet":
        parquet = open_parquet(first, storage)
        table = next(parquet.iter_batches(batch_size=SAMPLE_ROWS), None)
        columns = {name: [] for name in parquet.schema_arrow.names}
        if table is not None:
            columns = table.to_pydict()
    else:
        table = next(iter_text_tables(spec, storage, first), None)
        columns = table.slice(0, SAMPLE_ROWS).to_pydict() if table is not None else {}
    if not columns:
        raise BatchlabelError(f"{first.url} holds no columns.")
    return Sample(first.url, first.format, len(files), columns)


def _strings(values: list) -> list[str]:
    return [v for v in values if isinstance(v, str)]


def _mean_length(values: list) -> float:
    texts = _strings(values)
    return sum(map(len, texts)) / len(texts) if texts else 0.0


def _is_unique_id(values: list) -> bool:
    return bool(values) and None not in values and len(set(map(str, values))) == len(values)


def _by_name(columns: dict[str, list], names: tuple[str, ...]) -> list[str]:
    lower = {c.lower(): c for c in columns}
    return [lower[n] for n in names if n in lower]


def propose_text(columns: dict[str, list]) -> str:
    named = [c for c in _by_name(columns, TEXT_NAMES) if _strings(columns[c])]
    if named:
        return named[0]
    longest = max(columns, key=lambda c: _mean_length(columns[c]))
    if not _mean_length(columns[longest]):
        raise BatchlabelError(f"No column holds text (columns: {', '.join(columns)}): pass --text-column.")
    return longest


def propose_id(columns: dict[str, list], text: str) -> str:
    named = _by_name(columns, ID_NAMES) + [c for c in columns if c.lower().endswith("_id")]
    for column in named + [c for c in columns if c != text]:
        if column != text and _is_unique_id(columns[column]):
            return column
    raise BatchlabelError(
        f"No column holds unique row ids in the first {SAMPLE_ROWS} rows (columns: {', '.join(columns)}). "
        "Add one (a row number will do: it names each row in the output and makes resume exact), or pass --id-column."
    )


def gold_values(values: list) -> list[str]:
    """The distinct gold values, most frequent first (ties in order of appearance)."""
    counts: dict[str, int] = {}
    for value in values:
        if value is not None and str(value).strip():
            counts[str(value)] = counts.get(str(value), 0) + 1
    return sorted(counts, key=lambda v: -counts[v])


def propose_gold(columns: dict[str, list], taken: set[str]) -> str | None:
    for column in _by_name(columns, GOLD_NAMES):
        if column not in taken and 2 <= len(gold_values(columns[column])) <= MAX_GOLD_LABELS:
            return column
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "corpus"


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML string


@dataclass
class Choices:
    path: str
    format: str
    id_column: str
    text_column: str
    gold_column: str | None
    labels: list[str]
    method: str
    engine: str
    model: str
    base_url: str | None
    output_dir: str
    name: str
    endpoint_url: str | None = None


def _c(text: str, comment: str) -> str:
    """A YAML line with its comment in the comment column."""
    return f"{text:<36}# {comment}"


def method_lines(c: Choices) -> list[str]:
    if c.method == "embed":
        return [
            "method:",
            _c("  name: embed", "MiniLM sentence embeddings + a linear head trained on the gold rows"),
            '  encoder: "bundled:all-MiniLM-L6-v2"',
            "  max_length: 256",
            _c("train:", "`run` trains the head first when train.output holds none (inline)"),
            "  method: head",
            _c("  input:", "rows whose gold label is empty or outside `labels` are skipped"),
            f"    path: {_q(c.path)}",
            *([f"    format: {c.format}"] if c.format != "auto" else []),
            f"    id_column: {_q(c.id_column)}",
            f"    text_column: {_q(c.text_column)}",
            f"    gold_column: {_q(c.gold_column or '')}",
            f"  output: {_q(c.output_dir + '_head')}",
            "  inline: true",
            _c("  eval_fraction: 0.1", "held out from training: the validation scores"),
        ]
    model = f"    model: {_q(c.model)}"
    engine = [
        "  engine:",
        f"    name: {c.engine}",
        _c(model, "SmolLM2-135M-Instruct shows the mechanics; a 1-8B instruct model labels well")
        if c.model == DEFAULT_MODEL else model,
        _c("    max_article_tokens: 256", "each text is cut to this many tokens (flagged truncated)"),
    ]
    if c.engine == "openai":
        engine.append(f"    base_url: {_q(c.base_url or 'http://127.0.0.1:8000/v1')}")
    elif c.engine == "hf":
        engine.append("    batch_size: 8")
    else:
        engine.append(_c("    max_model_len: 4096", "prompt + answer: 8 texts of 256 tokens fit"))
    if c.method == "score":
        return [
            "method:",
            _c("  name: score", "each label's log-probability as the answer; softmax = confidence"),
            *engine,
            "  variant: full",
            _c("  calibrate: true", "helps a small model (SmolLM2-135M on R8: 0.30 -> 0.38); try false for 1B+"),
        ]
    return [
        "method:",
        _c("  name: prompt", "the model answers with a label (structured output, validated, re-asked)"),
        *engine,
        _c(f"  items_per_prompt: {8 if c.engine != 'hf' else 1}", "texts per prompt (> 1: one JSON list of {id, label})"),
    ]


def job_yaml(c: Choices, sample: Sample, extras_line: str) -> str:
    rows = len(next(iter(sample.columns.values()), []))
    others = [col for col in sample.columns if col not in (c.id_column, c.text_column, c.gold_column)]
    gold = (
        _c(f"  gold_column: {_q(c.gold_column)}", "enables accuracy / macro-F1 in the report") if c.gold_column
        else _c("  # gold_column: COLUMN", "a column of known labels, if any: enables metrics")
    )
    labels_comment = (
        f"the values of {c.gold_column} in those rows, most frequent first: add any that are missing" if c.gold_column
        else 'a description per label helps prompt/score: {name: x, description: "..."}'
    )
    lines = [
        extras_line,
        f"# Written by `batchlabel init {c.path}` from its first {rows} rows ({sample.files} file(s), {sample.format}).",
        "# Check it with `batchlabel run THIS.yaml --dry-run`; every field: `batchlabel schema`.",
        f"name: {_q(c.name)}",
        "input:",
        f"  path: {_q(c.path)}",
        *([f"  format: {c.format}"] if c.format != "auto" else []),
        f"  id_column: {_q(c.id_column)}",
        f"  text_column: {_q(c.text_column)}",
        gold,
        _c(f"  # passthrough: {json.dumps(others, ensure_ascii=False)}", "input columns to copy into the output"),
        _c("  # limit: 1000", "label only the first rows: try a sample first"),
        _c("labels:", labels_comment),
        *[f"  - {{name: {_q(label)}}}" for label in c.labels],
        *method_lines(c),
        "runtime:",
        _c("  actors: 1", "one per GPU (with gpus_per_actor: 1), or one per core for small encoders"),
        f"  batch_size: {64 if c.method == 'embed' else 32}",
        "output:",
        f"  path: {_q(c.output_dir)}",
        _c("  shard_rows: 1000", "the resume unit; 50,000-100,000 for millions of rows (docs/scaling.md)"),
    ]
    if c.endpoint_url:
        lines += ["storage:", f"  endpoint_url: {_q(c.endpoint_url)}"]
    return "\n".join(lines) + "\n"


def _interactive(yes: bool) -> bool:
    return not yes and sys.stdin.isatty()


def _ask(question: str, proposal: str | None, ask: bool) -> str | None:
    if not ask:
        return proposal
    answer = typer.prompt(question, default=proposal if proposal is not None else "none")
    return None if answer.strip().lower() in ("", "none") else answer.strip()


def _choose(sample: Sample, ask: bool, id_column, text_column, gold_column, labels) -> tuple[str, str, str | None, list[str]]:
    columns = sample.columns
    text = text_column or _ask("Text column", propose_text(columns), ask)
    ident = id_column or _ask("Id column (unique per row)", propose_id(columns, text), ask)
    if gold_column is None:  # "" = the user said there is none
        gold_column = _ask("Gold label column (none: there is none)", propose_gold(columns, {text, ident}), ask)
    gold_column = gold_column or None
    for column in (text, ident, gold_column):
        if column is not None and column not in columns:
            raise BatchlabelError(f"{sample.url} has no column {column!r} (columns: {', '.join(columns)}).")
    names = [n.strip() for n in labels.split(",") if n.strip()] if labels else None
    if names is None:
        proposal = gold_values(columns[gold_column]) if gold_column else []
        if len(proposal) > MAX_GOLD_LABELS:
            raise BatchlabelError(f"{gold_column} holds {len(proposal)} distinct values: pass --labels a,b,c.")
        answer = _ask("Labels, comma-separated", ",".join(proposal) or None, ask)
        names = [n.strip() for n in (answer or "").split(",") if n.strip()]
    if len(names) < 2:
        raise BatchlabelError("At least two labels are needed: pass --labels a,b,c (or --gold-column with the known labels).")
    return ident, text, gold_column, names


def init(
    path: str = typer.Argument(..., help="The corpus: a Parquet / CSV / JSONL file or a directory of them, local or s3://."),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="Job spec to write (default: NAME.yaml here)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated labels (default: the gold column's values)."),
    method: Optional[str] = typer.Option(None, "--method", help="embed (needs gold labels) | score | prompt."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Column of unique row ids (default: proposed)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Column to label (default: proposed)."),
    gold_column: Optional[str] = typer.Option(None, "--gold-column", help="Column of known labels ('none': there is none)."),
    engine: str = typer.Option("hf", "--engine", help="prompt/score: hf | vllm (| openai for prompt)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="prompt/score: local HF dir, s3:// prefix, hub id or served name."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="engine openai: the server's URL."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="Where `run` writes labels (default: out/NAME)."),
    format: str = typer.Option("auto", "--format", help="auto | parquet | csv | jsonl."),
    name: Optional[str] = typer.Option(None, "--name", help="Job name (default: from the file name)."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", help="S3 endpoint (default: $AWS_ENDPOINT_URL)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Take every proposal; ask nothing (the default off a terminal)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the job spec if it exists."),
) -> None:
    """Propose a job spec for your own corpus: columns, labels and a method; writes a commented YAML."""
    import yaml

    from batchlabel.cli.extras import extras_line, job_needs, missing_extras
    from batchlabel.config import parse_job

    stem = _slug(Path(path.rstrip("/")).stem)
    target = output or Path(f"{stem}.yaml")
    if target.exists() and not force:
        raise BatchlabelError(f"{target} exists: pass --force to overwrite it, or -o another file.")
    ask = _interactive(yes)
    sample = read_sample(path, format, endpoint_url)
    gold_flag = None if gold_column is None else ("" if gold_column.lower() == "none" else gold_column)
    ident, text, gold, names = _choose(sample, ask, id_column, text_column, gold_flag, labels)
    default_method = "embed" if gold else "score"
    chosen = method or (_ask(f"Method ({' | '.join(METHODS)})", default_method, ask) or default_method)
    if chosen not in METHODS or engine not in ENGINES:
        raise BatchlabelError(f"--method is one of {', '.join(METHODS)} and --engine one of {', '.join(ENGINES)}.")
    if chosen == "embed" and not gold:
        raise BatchlabelError("Method embed trains a head on gold labels: pass --gold-column, or choose --method score or prompt.")
    choices = Choices(path, format, ident, text, gold, names, chosen, engine, model, base_url,
                      output_dir or f"out/{stem}", name or stem.replace("_", "-"), endpoint_url)
    spec = parse_job(yaml.safe_load(job_yaml(choices, sample, "")), source=f"{target} (as proposed)")
    text_out = job_yaml(choices, sample, extras_line(job_needs(spec)))
    target.write_text(text_out, encoding="utf-8")
    out.print(f"wrote {target}: id {ident!r}, text {text!r}, gold {gold!r}, {len(names)} labels, method {chosen}", highlight=False)
    problem = missing_extras(spec, ("label", "train"))
    if problem:
        err.print(f"[yellow]warning:[/] this job {problem}", highlight=False, soft_wrap=True)
    for need in job_needs(spec):
        if need.phase == "model" and not need.model_present():
            err.print(f"note: {need.model} is not there yet: batchlabel models import-gguf {Path(need.model).name}",
                      highlight=False, soft_wrap=True)
    out.print(f"next: batchlabel run {target} --dry-run", highlight=False)
