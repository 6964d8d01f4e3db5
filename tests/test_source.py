"""Input planning (metadata only) and reading (only the shard): formats, shards, splits, limits, bad inputs."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchlabel.config import InputSpec, SplitSpec
from batchlabel.errors import InputError
from batchlabel.io.source import in_split, plan_input, read_shards
from batchlabel.io.storage import StorageSettings

STORAGE = StorageSettings()


def _write_parquet(path, n, start=0):
    pq.write_table(pa.table({"id": [f"x{i}" for i in range(start, start + n)], "text": [f"t {i}" for i in range(start, start + n)],
                             "label": ["a" if i % 2 else "b" for i in range(start, start + n)]}), path)


def _rows(spec, plan):
    return [r for f in plan.files for t in read_shards(spec, STORAGE, f, f.shards) for r in t.to_pylist()]


def test_directory_of_parquet_is_cut_into_deterministic_shards(tmp_path):
    _write_parquet(tmp_path / "b.parquet", 25, start=100)
    _write_parquet(tmp_path / "a.parquet", 10)
    spec = InputSpec(path=str(tmp_path), gold_column="label")
    plan = plan_input(spec, STORAGE, shard_rows=8)
    assert [f.url.rsplit("/", 1)[-1] for f in plan.files] == ["a.parquet", "b.parquet"]
    assert [s.key for s in plan.shards] == ["00000-00000", "00000-00001", "00001-00000", "00001-00001", "00001-00002", "00001-00003"]
    assert plan.total_rows == 35
    rows = _rows(spec, plan)
    assert [r["id"] for r in rows] == [f"x{i}" for i in range(10)] + [f"x{i}" for i in range(100, 125)]
    assert rows[0]["_shard"] == "00000-00000" and rows[9]["_row"] == 9 and rows[0]["gold"] == "b"
    assert plan_input(spec, STORAGE, shard_rows=8).fingerprint() == plan.fingerprint()


def test_csv_with_embedded_newlines_and_quotes(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,text,label\n1,"line one\nline two, with comma",a\n2,"she said ""hi""",b\n3,plain,a\n')
    spec = InputSpec(path=str(path), gold_column="label")
    rows = _rows(spec, plan_input(spec, STORAGE, 2))
    assert [r["text"] for r in rows] == ["line one\nline two, with comma", 'she said "hi"', "plain"]
    assert [r["id"] for r in rows] == ["1", "2", "3"]  # integer ids become strings


def test_jsonl_and_non_string_text(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"id": 1, "text": "hello"}, {"id": 2, "text": 42}, {"id": 3, "text": None}]))
    spec = InputSpec(path=str(path))
    rows = _rows(spec, plan_input(spec, STORAGE, 10))
    assert [r["text"] for r in rows] == ["hello", "42", None]


def test_hash_split_is_stable_and_complementary(tmp_path):
    _write_parquet(tmp_path / "a.parquet", 200)
    train = InputSpec(path=str(tmp_path), split=SplitSpec(fraction=0.75, part="train"))
    test = InputSpec(path=str(tmp_path), split=SplitSpec(fraction=0.75, part="test"))
    train_ids = {r["id"] for r in _rows(train, plan_input(train, STORAGE, 30))}
    test_ids = {r["id"] for r in _rows(test, plan_input(test, STORAGE, 30))}
    assert not train_ids & test_ids and len(train_ids | test_ids) == 200
    assert 120 < len(train_ids) < 180
    assert train_ids == {r["id"] for r in _rows(train, plan_input(train, STORAGE, 7))}


def test_limit_keeps_the_first_rows(tmp_path):
    _write_parquet(tmp_path / "a.parquet", 50)
    spec = InputSpec(path=str(tmp_path), limit=13)
    plan = plan_input(spec, STORAGE, 5)
    assert plan.total_rows == 13 and len(plan.shards) == 3
    assert [r["id"] for r in _rows(spec, plan)] == [f"x{i}" for i in range(13)]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: pq.write_table(pa.table({"ident": ["1"], "text": ["a"]}), p / "f.parquet"), "has no column 'id'"),
        (lambda p: pq.write_table(pa.table({"id": ["1"], "body": ["a"]}), p / "f.parquet"), "has no column 'text'"),
        (lambda p: pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), p / "f.parquet"), "no rows to label"),
        (lambda p: (p / "f.parquet").write_bytes(b"PAR1 this is not parquet"), "Cannot read parquet file"),
        (lambda p: None, "does not exist"),
    ],
)
def test_bad_inputs_give_clear_errors(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(InputError, match=message):
        plan_input(InputSpec(path=str(tmp_path / "f.parquet")), STORAGE, 10)


def test_truncated_parquet_file(tmp_path):
    _write_parquet(tmp_path / "good.parquet", 100)
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "f.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="Cannot read parquet file"):
        plan_input(InputSpec(path=str(tmp_path / "f.parquet")), STORAGE, 10)


def test_missing_ids_are_found_by_the_read_task(tmp_path):
    pq.write_table(pa.table({"id": ["1", None], "text": ["a", "b"]}), tmp_path / "f.parquet")
    spec = InputSpec(path=str(tmp_path / "f.parquet"))
    with pytest.raises(InputError, match="1 row\\(s\\) with no id \\(first at row 1\\)"):
        _rows(spec, plan_input(spec, STORAGE, 10))


def test_parquet_shards_follow_the_row_groups_of_the_footer(tmp_path):
    pq.write_table(pa.table({"id": [f"x{i}" for i in range(1000)], "text": ["t"] * 1000}), tmp_path / "a.parquet",
                   row_group_size=300)
    spec = InputSpec(path=str(tmp_path / "a.parquet"))
    plan = plan_input(spec, STORAGE, shard_rows=200)
    # groups 300, 300, 300, 100: each big group is its own read unit, cut every 200 rows; the tail is its own
    assert [(s.start, s.stop, s.unit) for s in plan.shards] == [
        (0, 200, 0), (200, 300, 0), (300, 500, 1), (500, 600, 1), (600, 800, 2), (800, 900, 2), (900, 1000, 3)]
    big = plan_input(spec, STORAGE, shard_rows=700)  # small groups joined until they reach shard_rows
    assert [(s.start, s.stop) for s in big.shards] == [(0, 900), (900, 1000)]
    rows = _rows(spec, plan)
    assert [r["id"] for r in rows] == [f"x{i}" for i in range(1000)] and rows[450]["_row"] == 450
    assert {r["_shard_rows"] for r in rows if r["_shard"] == "00000-00006"} == {100}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_text_byte_ranges_own_the_lines_that_start_in_them(tmp_path, fmt):
    texts = [("long " * (i % 7) * 40 + f"t{i}") for i in range(3000)]
    path = tmp_path / f"d.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": t}) + ("\n\n" if i % 500 == 0 else "\n") for i, t in enumerate(texts)))
    else:
        path.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)))
    spec = InputSpec(path=str(path), csv_newlines_in_values=False)
    plan = plan_input(spec, STORAGE, shard_rows=100)
    assert len(plan.shards) > 10 and all(s.kind == "bytes" for s in plan.shards)
    rows = _rows(spec, plan)
    assert [r["id"] for r in rows] == [str(i) for i in range(3000)] and [r["text"] for r in rows] == texts
    counts = {}
    for r in rows:
        counts[r["_shard"]] = counts.get(r["_shard"], 0) + 1
    assert all(r["_shard_rows"] == counts[r["_shard"]] for r in rows)


def test_csv_with_quoted_newlines_is_one_shard_per_file(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text\n" + "".join(f'{i},"a\nb {i}"\n' for i in range(500)))
    spec = InputSpec(path=str(path))
    plan = plan_input(spec, STORAGE, shard_rows=10)
    assert [(s.kind, s.start, s.stop) for s in plan.shards] == [("lines", 0, -1)]
    assert [r["text"] for r in _rows(spec, plan)] == [f"a\nb {i}" for i in range(500)]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_limit_after_split_keeps_the_first_rows_of_the_part(tmp_path, fmt):
    ids = [f"x{i}" for i in range(400)]
    if fmt == "parquet":
        pq.write_table(pa.table({"id": ids, "text": ["t"] * 400}), tmp_path / "a.parquet", row_group_size=64)
    else:
        (tmp_path / "a.jsonl").write_text("".join(json.dumps({"id": i, "text": "t"}) + "\n" for i in ids))
    split = SplitSpec(fraction=0.5, part="test")
    spec = InputSpec(path=str(tmp_path / f"a.{fmt}"), split=split, limit=37)
    plan = plan_input(spec, STORAGE, 10)
    kept = [i for i, keep in zip(ids, in_split(pa.array(ids), split).to_pylist()) if keep]
    assert [r["id"] for r in _rows(spec, plan)] == kept[:37] and plan.total_rows == 37 and plan.rows_exact


def test_split_is_vectorised_and_does_not_depend_on_the_layout():
    ids = pa.array([f"id-{i}" for i in range(20000)])
    split = SplitSpec(fraction=0.8, part="train")
    whole = in_split(ids, split).to_pylist()
    parts = in_split(ids.slice(0, 7000), split).to_pylist() + in_split(ids.slice(7000), split).to_pylist()
    assert whole == parts and 0.78 < sum(whole) / 20000 < 0.82
    assert in_split(pa.array([1, 2]), split).to_pylist() == in_split(pa.array(["1", "2"]), split).to_pylist()


def test_an_actor_reads_the_shards_of_a_big_row_group_with_one_forward_cursor(tmp_path, monkeypatch):
    """Shard descriptors (io/datasource.py) name one shard each; the ShardReader of one actor that gets shards 0, 2,
    5 of one 20,000-row group (the others went to other actors) decodes the group once, forward, and returns
    exactly each shard's rows; going back opens a new cursor."""
    from batchlabel.io import datasource

    n = 20_000
    pq.write_table(pa.table({"id": [f"x{i}" for i in range(n)], "text": [f"t {i}" for i in range(n)]}),
                   tmp_path / "one.parquet", row_group_size=n)
    spec = InputSpec(path=str(tmp_path / "one.parquet"))
    plan = plan_input(spec, STORAGE, shard_rows=3000)
    items = datasource.shard_items(plan, {s.key for s in plan.shards})
    assert len(items) == len(plan.shards) == 7
    opened = []
    real = datasource.ParquetCursor
    monkeypatch.setattr(datasource, "ParquetCursor", lambda *a: opened.append(a[-2:]) or real(*a))
    reader = datasource.ShardReader(spec, STORAGE)

    def ids(k):
        [(shard, table)] = list(reader.read(items[k][datasource.UNIT_COLUMN]))
        assert shard.key == f"00000-{k:05d}" and table.column("_shard_rows")[0].as_py() == table.num_rows
        return table.column("id").to_pylist()

    for k in (0, 2, 5, 6):
        assert ids(k) == [f"x{i}" for i in range(3000 * k, min(n, 3000 * (k + 1)))]
    assert opened == [(0, n)]  # one cursor over the whole unit for all four
    assert ids(1) == [f"x{i}" for i in range(3000, 6000)] and len(opened) == 2  # backwards: a new cursor
