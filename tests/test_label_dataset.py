"""The data path on Ray: label_dataset() inside a user's pipeline; run_job with byte-range shards and a split that
empties shards; duplicate ids found across shards by Ray tasks (the run is refused, both places named)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchlabel.config import parse_job
from batchlabel.errors import InputError
from batchlabel.io.formats import in_split
from batchlabel.io.sink import read_committed, read_manifest
from batchlabel.io.storage import StorageSettings
from batchlabel.run.pipeline import run_job

pytestmark = pytest.mark.slow
NOOP = {"name": "custom", "labeler": "batchlabel.testing.noop:NoopLabeler"}
LABELS = ["a", "b"]


def _job(path: str, out: str, **input_extra) -> dict:
    return {"name": "dp", "input": {"path": path, **input_extra}, "labels": LABELS, "method": NOOP,
            "runtime": {"actors": 1, "batch_size": 50}, "output": {"path": out, "shard_rows": 100}}


def test_label_dataset_in_a_user_pipeline(ray_cluster):
    import ray

    import batchlabel

    ds = ray.data.from_items([{"id": f"u{i}", "text": f"text {i}"} for i in range(300)], override_num_blocks=3)
    labeled = batchlabel.label_dataset(ds, {"labels": LABELS, "method": NOOP, "runtime": {"batch_size": 64}})
    assert isinstance(labeled, ray.data.Dataset)  # lazy: nothing labeled yet
    rows = labeled.take_all()
    assert sorted(r["id"] for r in rows) == sorted(f"u{i}" for i in range(300))
    assert {r["label"] for r in rows} == {"a"} and all(r["error"] is None and r["gold"] is None for r in rows)
    assert not {"_shard", "_row", "_shard_rows"} & set(rows[0])


def test_jsonl_byte_ranges_and_a_split_that_empties_shards(ray_cluster, tmp_path):
    ids = [f"j{i}" for i in range(2000)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"t {i} " + "x" * 300}) + "\n" for i in ids))
    raw = _job(str(path), str(tmp_path / "out"), split={"fraction": 0.997, "part": "test"})
    raw["output"]["shard_rows"] = 200  # 64 KiB byte ranges (the minimum): ~11 shards for the 7 rows of the 0.3% part
    raw["eval"] = {"enabled": False}  # no report: the driver reads only the shard markers, never the rows
    result = run_job(parse_job(raw), progress=False)
    assert result.report == {} and len(result.fingerprints) == 1
    assert result.fingerprints == result.manifest["fingerprints"]
    kept = [i for i, keep in zip(ids, in_split(pa.array(ids), parse_job(raw).input.split).to_pylist()) if keep]
    table = read_committed(str(tmp_path / "out"), StorageSettings())
    assert sorted(table.column("id").to_pylist()) == sorted(kept) and result.manifest["rows"] == len(kept)
    markers = list((tmp_path / "out" / "_batchlabel" / "shards").glob("*.json"))
    assert len(markers) == result.manifest["planned_shards"] > len(result.manifest["shards"])


def test_duplicate_ids_are_found_by_ray_tasks_and_refuse_the_run(ray_cluster, tmp_path):
    """The check run_job does before its manifest, on shards committed by write tasks (no labeling needed)."""
    from batchlabel.config import InputSpec
    from batchlabel.io.datasink import write_table
    from batchlabel.io.planning import plan_input
    from batchlabel.io.sink import ShardSink
    from batchlabel.run.pipeline import Finalizer

    ids = [f"d{i}" for i in range(250)]
    ids[230] = "d17"
    pq.write_table(pa.table({"id": ids, "text": ["t"] * 250}), tmp_path / "in.parquet")
    plan = plan_input(InputSpec(path=str(tmp_path / "in.parquet")), StorageSettings(), 100)
    out = str(tmp_path / "out")
    sink = ShardSink(out, StorageSettings(), [s.key for s in plan.shards], {"spec_hash": "s", "plan": plan.fingerprint()})
    sink.open(False)
    returns = []
    for shard in plan.shards:
        n = shard.stop - shard.start
        returns += write_table(out, StorageSettings(), pa.table({
            "id": ids[shard.start:shard.stop], "label": ["a"] * n, "error": pa.nulls(n, pa.string()),
            "labeler_fingerprint": ["f"] * n, "_shard": [shard.key] * n, "_row": list(range(shard.start, shard.stop)),
            "_shard_rows": [n] * n}))
    with pytest.raises(InputError, match=r"Duplicate id 'd17' .*in\.parquet row 17 and .*in\.parquet row 230"):
        Finalizer(sink, plan)(returns)
    assert read_manifest(out, StorageSettings()) is None


def test_two_actors_share_a_single_file_and_the_first_shard_commits_before_the_last_is_read(ray_cluster, tmp_path):
    """One Parquet file, one row group, 24 shards, 2 actors: each actor reads and labels a fair share of the shards
    (the shards are pulled by whichever actor is free; 0.4 s of work per shard leaves room for the actors to start
    a few seconds apart), and the reading streams: the first shard is committed before the last one is read.
    Behaviour from the run's own timeline, no wall-clock threshold."""
    n, shard = 2400, 100
    path = tmp_path / "one.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"text {i}" for i in range(n)]}), path,
                   row_group_size=n)
    raw = _job(str(path), str(tmp_path / "out"))
    raw["method"] = {**NOOP, "options": {"sleep_s": 0.4}}  # every shard keeps its actor busy for a while
    raw["runtime"] = {"actors": 2, "batch_size": shard}
    raw["output"]["shard_rows"] = shard
    result = run_job(parse_job(raw), progress=False)
    timeline = result.timeline
    assert sorted(r["key"] for r in timeline) == sorted(f"00000-{i:05d}" for i in range(n // shard))
    per_actor: dict[str, int] = {}
    for record in timeline:
        per_actor[record["actor"]] = per_actor.get(record["actor"], 0) + 1
    assert len(per_actor) == 2 and min(per_actor.values()) >= 0.3 * len(timeline), per_actor
    first_commit = min(r["committed_at"] for r in timeline)
    last_read = max(r["read_at"] for r in timeline)
    assert first_commit < last_read
    shares = result.report["run"]["actors"]
    assert sorted(s["shards"] for s in shares.values()) == sorted(per_actor.values())
    assert sum(s["rows"] for s in shares.values()) == n == result.manifest["rows"]
    table = read_committed(str(tmp_path / "out"), StorageSettings(), columns=["id"])
    assert sorted(table.column("id").to_pylist()) == sorted(f"r{i}" for i in range(n))
