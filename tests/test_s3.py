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


def test_a_model_is_downloaded_once_per_node(moto_endpoint, s3_bucket, tmp_path):
    """Actors that start together on one node fetch each model file once (the others wait on the lock)."""
    import threading

    from flaky_proxy import FlakyProxy

    from batchlabel.io.storage import local_model_dir

    direct = StorageSettings(endpoint_url=moto_endpoint)
    files = {f"model-{i}.safetensors": bytes([i]) * (1 << 20) for i in range(3)}
    for name, data in files.items():
        direct.write_bytes(f"{s3_bucket}/models/m1/{name}", data)
    with FlakyProxy(moto_endpoint, fault_rate=0.0) as proxy:
        storage = StorageSettings(endpoint_url=proxy.endpoint)
        barrier, found = threading.Barrier(4), []

        def actor() -> None:
            barrier.wait()
            found.append(local_model_dir(f"{s3_bucket}/models/m1", storage, cache_root=tmp_path))

        threads = [threading.Thread(target=actor) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        gets = [path for method, path, _ in proxy.answered if method == "GET" and "model-" in path]
    assert len(set(found)) == 1 and len(found) == 4
    assert sorted(p.rsplit("/", 1)[-1].split("?")[0] for p in gets) == sorted(files)  # each file fetched once
    assert {p.name: p.read_bytes() for p in Path(found[0]).iterdir()} == files


def test_id_look_up_on_s3_reads_one_row_group(moto_endpoint, s3_bucket):
    """The duplicate check's id look-up fetches the footer and one row group's id chunk, not the part file."""
    import numpy as np
    import pyarrow as pa

    from flaky_proxy import FlakyProxy

    from batchlabel.io.duplicates import _id_at
    from batchlabel.io.reads import PART_ROW_GROUP_ROWS
    from batchlabel.io.sink import commit_shard, part_name

    rows = 3 * PART_ROW_GROUP_ROWS
    rng = np.random.default_rng(0)
    table = pa.table({
        "id": [f"doc-{i:07d}" for i in range(rows)], "text": ["".join(rng.choice(list("abcdefgh"), 200)) for _ in range(rows)],
        "label": ["a"] * rows, "error": pa.nulls(rows, pa.string()), "labeler_fingerprint": ["f"] * rows,
        "_row": np.arange(rows) + 100, "_shard": [0] * rows, "_shard_rows": [rows] * rows,
    })
    output = f"{s3_bucket}/run"
    commit_shard(output, StorageSettings(endpoint_url=moto_endpoint), "00000-00000", table)
    size = StorageSettings(endpoint_url=moto_endpoint).s3().get_file_info(f"{output[5:]}/{part_name('00000-00000')}").size
    with FlakyProxy(moto_endpoint, fault_rate=0.0) as proxy:
        assert _id_at(output, StorageSettings(endpoint_url=proxy.endpoint), "00000-00000", 100 + PART_ROW_GROUP_ROWS + 5) \
            == f"doc-{PART_ROW_GROUP_ROWS + 5:07d}"
        part_bytes = sum(n for method, path, n in proxy.answered if method == "GET" and "part-" in path)
    assert 0 < part_bytes < size / 10, (part_bytes, size)
