"""`batchlabel init`: the README's "Label your own corpus" recipe run verbatim on a file the test makes, and
init's proposals (columns, labels, method) on CSV / Parquet / JSONL, each accepted by `run --dry-run`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from batchlabel.cli import app
from batchlabel.config import load_job

from conftest import DATA, REPO

RECIPE_HEADING = "## Label your own corpus"


def recipe() -> tuple[list[str], str]:
    """(the command lines of the section's one ```bash block, the input file the init line names)."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n{RECIPE_HEADING}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the recipe is one ```bash block"
    lines = [line for line in blocks[0].splitlines() if line.strip() and not line.lstrip().startswith("#")]
    init = next(line for line in lines if line.startswith("batchlabel init "))
    return lines, init.split()[2]


def test_the_recipe_is_short_and_placed_after_the_quick_start():
    text = (REPO / "README.md").read_text()
    headings = re.findall(r"^## .*$", text, flags=re.MULTILINE)
    assert headings[headings.index(RECIPE_HEADING) - 1].startswith("## Quick start")
    lines, corpus = recipe()
    assert len(lines) <= 6 and corpus.endswith((".csv", ".parquet", ".jsonl"))
    commands = " ".join(lines)
    assert "batchlabel init" in commands and "--dry-run" in commands and re.search(r"batchlabel run \S+\.yaml\s", commands + " ")


def news_rows(n: int = 24) -> pa.Table:
    """Real news articles (R8 test), ids and text only: a corpus without labels."""
    table = pq.read_table(DATA / "reuters_r8" / "test.parquet", columns=["id", "text"]).slice(0, n)
    return table.set_column(0, "id", pa.array([f"doc-{i:03d}" for i in range(n)]))


@pytest.mark.slow
def test_the_readme_recipe_runs_verbatim_and_labels_every_row_once(tmp_path):
    lines, corpus = recipe()
    work = tmp_path / "work"
    work.mkdir()
    data = tmp_path / "data" / Path(corpus).name
    data.parent.mkdir()
    rows = news_rows()
    {".csv": pcsv.write_csv, ".parquet": pq.write_table}[data.suffix](rows, data)
    script = "\n".join(line.replace(corpus, str(data)) for line in lines)  # only the input path is substituted
    env = {
        **os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TERM": "dumb",
    }
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "nothing was labeled (--dry-run)" in done.stdout
    spec = load_job(next(work.glob("*.yaml")))
    output = work / spec.output.path
    labeled = pq.ParquetDataset(sorted(output.glob("part-*.parquet"))).read().to_pydict()
    ids = labeled["id"]
    assert sorted(ids) == sorted(rows.column("id").to_pylist())  # every row of the file ...
    assert len(ids) == len(set(ids)) == rows.num_rows  # ... exactly once
    assert all(error is None for error in labeled["error"]), labeled["error"]
    assert set(labeled["label"]) <= set(spec.label_names)
    assert f"rows: {rows.num_rows}" in done.stdout  # the last line shows the report


def init(*args: str):
    return CliRunner().invoke(app, ["init", *args])


def dry_run(job: Path):
    return CliRunner().invoke(app, ["run", str(job), "--dry-run"])


def test_init_on_a_csv_without_labels_proposes_columns_and_writes_a_spec_that_dry_runs(tmp_path):
    table = news_rows(20).append_column("source", pa.array(["wire"] * 20))
    table = table.select(["source", "text", "id"])  # the id column is not first
    pcsv.write_csv(table, tmp_path / "articles.csv")
    job = tmp_path / "job.yaml"
    result = init(str(tmp_path / "articles.csv"), "--labels", "business, sports ,politics", "-o", str(job), "--yes")
    assert result.exit_code == 0, result.output
    text = job.read_text()
    assert text.startswith("# extras: gguf (install: ") and "# gold_column:" in text
    spec = load_job(job)
    assert (spec.input.id_column, spec.input.text_column, spec.input.gold_column) == ("id", "text", None)
    assert spec.label_names == ["business", "sports", "politics"] and spec.method.name == "score"
    assert spec.method.engine.model == "models/smollm2-135m" and spec.output.path == "out/articles"
    planned = dry_run(job)
    assert planned.exit_code == 0 and '"rows": 20' in planned.stdout and "nothing was labeled" in planned.stdout


def test_init_on_parquet_with_gold_proposes_the_labels_and_embed(tmp_path):
    table = pq.read_table(DATA / "reuters_r8" / "test.parquet").slice(0, 60).rename_columns(["doc_id", "body", "topic"])
    pq.write_table(table, tmp_path / "r8.parquet")
    job = tmp_path / "r8.yaml"
    result = init(str(tmp_path / "r8.parquet"), "-o", str(job), "--yes")
    assert result.exit_code == 0, result.output
    spec = load_job(job)
    assert (spec.input.id_column, spec.input.text_column, spec.input.gold_column) == ("doc_id", "body", "topic")
    counts = {}
    for label in table.column("topic").to_pylist():
        counts[label] = counts.get(label, 0) + 1
    assert spec.label_names == sorted(counts, key=lambda k: -counts[k])  # from the gold column, most frequent first
    assert spec.method.name == "embed" and spec.train.method == "head" and spec.train.inline
    assert spec.train.input.gold_column == "topic" and spec.train.input.path == str(tmp_path / "r8.parquet")
    assert job.read_text().startswith("# extras: none")
    assert dry_run(job).exit_code == 0


def test_init_on_jsonl_with_the_prompt_method_on_an_openai_server(tmp_path):
    rows = [{"uid": f"u{i}", "tweet": t, "n": i} for i, t in enumerate(["good day", "awful service", "fine"] * 4)]
    (tmp_path / "tweets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = tmp_path / "t.yaml"
    result = init(str(tmp_path / "tweets.jsonl"), "--labels", "positive,negative,neutral", "--method", "prompt",
                  "--engine", "openai", "--model", "my-model", "--base-url", "http://127.0.0.1:8000/v1",
                  "-o", str(job), "--yes", "--output-dir", str(tmp_path / "labeled"))
    assert result.exit_code == 0, result.output
    spec = load_job(job)
    assert (spec.input.id_column, spec.input.text_column) == ("uid", "tweet")
    assert spec.method.engine.name == "openai" and spec.method.items_per_prompt == 8
    assert job.read_text().startswith("# extras: openai (install: ")
    assert dry_run(job).exit_code == 0 and not (tmp_path / "labeled").exists()


def test_init_asks_at_a_terminal(tmp_path, monkeypatch):
    import batchlabel.cli.init as init_module

    monkeypatch.setattr(init_module, "_interactive", lambda yes: not yes)
    pq.write_table(pq.read_table(DATA / "reuters_r8" / "test.parquet").slice(0, 40), tmp_path / "c.parquet")
    job = tmp_path / "c.yaml"
    # text, id: keep the proposals; gold: none; labels: typed; method: keep the proposal (score without gold)
    answers = "\n\nnone\nearn,acq,other\n\n"
    result = CliRunner().invoke(app, ["init", str(tmp_path / "c.parquet"), "-o", str(job)], input=answers)
    assert result.exit_code == 0, result.output
    assert "Text column [text]" in result.output and "Gold label column (none: there is none) [label]" in result.output
    spec = load_job(job)
    assert spec.input.gold_column is None and spec.label_names == ["earn", "acq", "other"]
    assert spec.method.name == "score"


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("id,text\n1,a\n1,b\n", ["--labels", "a,b"], "No column holds unique row ids"),
        ("id,text\n1,a\n2,b\n", ["--labels", "a,b", "--method", "embed"], "Method embed trains a head on gold labels"),
        ("id,text\n1,a\n2,b\n", [], "At least two labels are needed"),
        ("id,text\n1,a\n2,b\n", ["--labels", "a,b", "--text-column", "body"], "has no column 'body'"),
    ],
)
def test_init_refuses_with_one_line_that_says_what_to_do(tmp_path, content, args, message):
    (tmp_path / "x.csv").write_text(content)
    result = init(str(tmp_path / "x.csv"), "-o", str(tmp_path / "x.yaml"), "--yes", *args)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "x.yaml").exists()


def test_init_does_not_overwrite_without_force(tmp_path):
    (tmp_path / "x.csv").write_text("id,text\n1,a\n2,b\n")
    (tmp_path / "x.yaml").write_text("mine\n")
    refused = init(str(tmp_path / "x.csv"), "--labels", "a,b", "-o", str(tmp_path / "x.yaml"), "--yes")
    assert refused.exit_code == 2 and "--force" in refused.stderr and (tmp_path / "x.yaml").read_text() == "mine\n"
    forced = init(str(tmp_path / "x.csv"), "--labels", "a,b", "-o", str(tmp_path / "x.yaml"), "--yes", "--force")
    assert forced.exit_code == 0 and yaml.safe_load((tmp_path / "x.yaml").read_text())["labels"][0] == {"name": "a"}


def test_init_reads_s3(s3_bucket, moto_endpoint, tmp_path):
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=moto_endpoint, region="us-east-1", access_key="testing-key-id",
                           secret_key="testing-secret", scheme="http")
    with fs.open_output_stream(f"{s3_bucket[5:]}/news/part-0.parquet") as stream:
        pq.write_table(news_rows(10), stream)
    job = tmp_path / "s3.yaml"
    result = init(f"{s3_bucket}/news/", "--labels", "a,b", "-o", str(job), "--yes", "--endpoint-url", moto_endpoint)
    assert result.exit_code == 0, result.output
    spec = load_job(job)
    assert spec.input.path == f"{s3_bucket}/news/" and spec.output.path == "out/news"
    assert spec.storage.endpoint_url == moto_endpoint
    assert dry_run(job).exit_code == 0
