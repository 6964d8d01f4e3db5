"""The rest of the bad-input catalogue (see docs/reliability.md): each a clear job error or an error/flagged row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from batchlabel.config import InputSpec, parse_job
from batchlabel.errors import BatchlabelError, OutputError
from batchlabel.io.sink import ShardSink, read_committed
from batchlabel.io.source import plan_input, read_shards
from batchlabel.io.storage import StorageSettings
from batchlabel.run.pipeline import run_job

from conftest import REPO, embed_job

STORAGE = StorageSettings()


def test_invalid_utf8_binary_text_is_decoded_with_replacement(tmp_path):
    table = pa.table({"id": ["a", "b"], "text": pa.array([b"caf\xe9 \xff\xfe ok", b"plain"], pa.binary())})
    pq.write_table(table, tmp_path / "bin.parquet")
    spec = InputSpec(path=str(tmp_path / "bin.parquet"))
    plan = plan_input(spec, STORAGE, 10)
    rows = [r for f in plan.files for t in read_shards(spec, STORAGE, f, f.shards) for r in t.to_pylist()]
    assert rows[0]["text"] == "caf\ufffd \ufffd\ufffd ok" and rows[1]["text"] == "plain"


def test_unwritable_output_is_a_clear_error(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "text": ["t"]}), tmp_path / "in.parquet")
    plan = plan_input(InputSpec(path=str(tmp_path / "in.parquet")), STORAGE, 10)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    keys = [s.key for s in plan.shards]
    sink = ShardSink(str(blocker / "out"), STORAGE, keys, {"spec_hash": "s", "plan": plan.fingerprint()})
    with pytest.raises(OutputError, match="Cannot write to output"):
        sink.open(restart=False)


def test_missing_encoder_path_is_a_clear_error(r8_small, trained_head, tmp_path):
    from batchlabel.methods import preflight_method

    raw = embed_job(r8_small, str(tmp_path / "o"), trained_head)
    raw["method"]["encoder"] = str(tmp_path / "no-such-model")
    spec = parse_job(raw)
    with pytest.raises(BatchlabelError, match="trained on encoder|does not exist"):
        preflight_method(spec, STORAGE)


def test_unknown_custom_labeler_is_a_clear_error(r8_small, tmp_path):
    from batchlabel.methods import preflight_method

    raw = embed_job(r8_small, str(tmp_path / "o"), str(tmp_path / "h"))
    raw["method"] = {"name": "custom", "labeler": "no_such_module:Labeler"}
    with pytest.raises(BatchlabelError, match="Cannot load labeler no_such_module:Labeler"):
        preflight_method(parse_job(raw), STORAGE)


@pytest.mark.slow
def test_huge_text_is_truncated_and_flagged(ray_cluster, r8_small, trained_head, tmp_path):
    rows = pq.read_table(r8_small["test"]).slice(0, 4).to_pylist()
    rows[2]["text"] = rows[2]["text"] + " more words" * 200_000  # ~2 MB of text
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    raw = embed_job(r8_small, str(tmp_path / "out"), trained_head, input={"path": str(tmp_path / "in.parquet")})
    result = run_job(parse_job(raw), progress=False)
    table = read_committed(str(tmp_path / "out"), STORAGE)
    flags = dict(zip(table.column("id").to_pylist(), table.column("truncated").to_pylist()))
    assert flags[rows[2]["id"]] is True
    assert table.column("error").null_count == 4  # labeled, not an error
    assert result.report["truncated_rows"] >= 1


@pytest.mark.slow
def test_secrets_never_reach_outputs_or_logs(r8_small, trained_head, tmp_path):
    import shutil
    import tempfile

    secret = "PLANTED-SECRET-3f9a1c"
    ray_tmp = tempfile.mkdtemp(prefix="blr", dir="/tmp")  # AF_UNIX socket paths must stay short
    out = tmp_path / "out"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(embed_job(r8_small, str(out), trained_head)))
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": secret, "OPENAI_API_KEY": secret,
           "TOGETHER_API_KEY": secret, "HF_HUB_OFFLINE": "1", "RAY_TMPDIR": ray_tmp}
    texts = []
    for args in (["run", str(job), "--dry-run"], ["run", str(job), "--verbose"], ["eval", str(out)]):
        result = subprocess.run([sys.executable, "-m", "batchlabel.cli", *args], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        texts += [result.stdout, result.stderr]
    assert all(secret not in text for text in texts)
    scanned = 0
    for root in (out, Path(ray_tmp)):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                scanned += 1
                assert secret.encode() not in path.read_bytes(), f"secret found in {path}"
    assert scanned > 10
    shutil.rmtree(ray_tmp, ignore_errors=True)
