"""Input, model and output on s3:// through a real moto_server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from batchlabel.config import parse_job
from batchlabel.io.sink import read_committed
from batchlabel.io.storage import StorageSettings
from batchlabel.run.pipeline import evaluate_output, run_job

from conftest import embed_job

pytestmark = pytest.mark.slow


def test_s3_in_s3_out_matches_local(ray_cluster, moto_endpoint, s3_bucket, r8_small, trained_head, tmp_path):
    storage = StorageSettings(endpoint_url=moto_endpoint)
    storage.write_bytes(f"{s3_bucket}/corpus/test.parquet", Path(r8_small["test"]).read_bytes())
    storage.upload_dir(Path(trained_head), f"{s3_bucket}/models/head")

    local = parse_job(embed_job(r8_small, str(tmp_path / "local"), trained_head))
    local_result = run_job(local, progress=False)

    remote = parse_job(
        embed_job(
            r8_small, f"{s3_bucket}/runs/r1", f"{s3_bucket}/models/head",
            input={"path": f"{s3_bucket}/corpus/"}, storage={"endpoint_url": moto_endpoint},
        )
    )
    remote_result = run_job(remote, progress=False)
    a = read_committed(str(tmp_path / "local"), StorageSettings()).sort_by("id")
    b = read_committed(f"{s3_bucket}/runs/r1", storage).sort_by("id")
    assert b.column("id").to_pylist() == a.column("id").to_pylist()
    assert b.column("label").to_pylist() == a.column("label").to_pylist()
    assert remote_result.report["metrics"] == local_result.report["metrics"]

    keys = {o["Key"] for o in boto3.client("s3", endpoint_url=moto_endpoint).list_objects_v2(
        Bucket=s3_bucket[5:], Prefix="runs/r1/")["Contents"]}
    for name in ["_manifest.json", "report.json", "report.md", "report.html", "confusion_matrix.png"]:
        assert f"runs/r1/{name}" in keys
    assert len([k for k in keys if k.startswith("runs/r1/part-")]) == 3

    # a rerun into the same s3 output writes nothing new
    again = run_job(remote, progress=False)
    assert again.rows_labeled_this_run == 0
    keys_after = {o["Key"] for o in boto3.client("s3", endpoint_url=moto_endpoint).list_objects_v2(
        Bucket=s3_bucket[5:], Prefix="runs/r1/")["Contents"]}
    assert keys_after == keys
    report, _ = evaluate_output(f"{s3_bucket}/runs/r1", storage)
    assert report["metrics"]["accuracy"] == local_result.report["metrics"]["accuracy"]


def test_training_writes_head_to_s3(moto_endpoint, s3_bucket, r8_small):
    from batchlabel.models.heads import LinearHead
    from batchlabel.training.base import train_model

    spec = parse_job(embed_job(r8_small, f"{s3_bucket}/unused", f"{s3_bucket}/heads/h1", storage={"endpoint_url": moto_endpoint}))
    spec.train.input.limit = 80
    result = train_model(spec, progress=False)
    head = LinearHead.load(f"{s3_bucket}/heads/h1", StorageSettings(endpoint_url=moto_endpoint))
    assert head.labels == spec.label_names and head.weight.shape == (8, 384)
    assert result.rows == 80
