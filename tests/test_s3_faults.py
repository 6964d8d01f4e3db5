"""S3 that fails: a loopback proxy in front of moto answers 503, drops connections or stalls."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchlabel.config import parse_job
from batchlabel.io.sink import read_committed
from batchlabel.io.storage import StorageSettings
from batchlabel.run.pipeline import run_job

from conftest import embed_job
from flaky_proxy import FlakyProxy

pytestmark = pytest.mark.slow


def test_flaky_s3_retries_and_commits_complete_output(ray_cluster, moto_endpoint, s3_bucket, r8_small, trained_head, tmp_path):
    direct = StorageSettings(endpoint_url=moto_endpoint)
    direct.write_bytes(f"{s3_bucket}/corpus/test.parquet", Path(r8_small["test"]).read_bytes())
    direct.upload_dir(Path(trained_head), f"{s3_bucket}/head")
    reference = run_job(parse_job(embed_job(r8_small, str(tmp_path / "local"), trained_head)), progress=False)

    with FlakyProxy(moto_endpoint, fault_rate=0.25, seed=7, delay_s=0.5) as proxy:
        raw = embed_job(r8_small, f"{s3_bucket}/runs/flaky", f"{s3_bucket}/head",
                        input={"path": f"{s3_bucket}/corpus/test.parquet"}, storage={"endpoint_url": proxy.endpoint})
        raw["output"]["shard_rows"] = 10
        result = run_job(parse_job(raw), progress=False)
    assert proxy.counts["503"] > 0 and proxy.counts["dropped"] > 0 and proxy.counts["delayed"] > 0
    table = read_committed(f"{s3_bucket}/runs/flaky", direct).sort_by("id")
    local = read_committed(str(tmp_path / "local"), StorageSettings()).sort_by("id")
    ids = table.column("id").to_pylist()
    assert ids == local.column("id").to_pylist() and len(set(ids)) == len(ids)
    assert table.column("label").to_pylist() == local.column("label").to_pylist()
    # labels, counts and every label-derived metric exactly; the two confidence means up to float rounding (the two
    # runs cut shards differently, so the encoder sees other batch shapes and the means sum rows in another order)
    metrics, expected = dict(result.report["metrics"]), dict(reference.report["metrics"])
    for key in ("mean_confidence_correct", "mean_confidence_wrong"):
        assert metrics.pop(key) == pytest.approx(expected.pop(key), rel=1e-6), key
    assert metrics == expected
    print("proxy counts:", proxy.counts)
