"""The nightly joins and counts in Arrow give what the per-row Python dicts gave, on a fixed history.

``_reference_*`` below are the dict-based implementations the nightly used before (nightly/partitions.py,
staging.py, drift.py at commit c0d2077), kept here as the oracle.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchlabel.config import parse_job
from batchlabel.hashing import text_hash
from batchlabel.io.storage import StorageSettings
from batchlabel.nightly.drift import ERROR_LABEL, current_distribution
from batchlabel.nightly.partitions import current_labels, latest_keys, partition_url
from batchlabel.nightly.staging import CORPUS_KEYS, REASON_COLUMN, stage_delta, write_staged

NAMES = ["a", "b", "c"]
STORAGE = StorageSettings()


def _rows(ids, texts, fingerprint, labels, errors):
    return pa.table({
        "id": ids, "text_hash": [text_hash(t) if isinstance(t, str) else None for t in texts],
        "labeler_fingerprint": [fingerprint] * len(ids), "label": labels, "error": pa.array(errors, pa.string()),
        "confidence": [0.5] * len(ids), "nightly_reason": ["new"] * len(ids),
    })


def _commit(partition: Path, parts: list[pa.Table]) -> None:
    """A committed partition: part files + manifest (what io/sink.py leaves)."""
    partition.mkdir(parents=True, exist_ok=True)
    shards = []
    for index, table in enumerate(parts):
        name = f"part-00000-{index:05d}.parquet"
        pq.write_table(table, partition / name, row_group_size=3)  # several row groups per file
        shards.append({"file": name})
    (partition / "_manifest.json").write_text(json.dumps({"shards": shards}))


TEXTS = {f"r{i}": f"text {i}" for i in range(20)}


def _history(root: Path) -> None:
    """Three committed nights and one that crashed before committing (ignored)."""
    night1 = [f"r{i}" for i in range(12)]
    errors1 = [None] * 12
    errors1[4] = errors1[9] = "engine: timeout | retry"
    labels1 = [None if e else NAMES[i % 3] for i, e in enumerate(errors1)]
    _commit(partition_root(root, "2026-11-20"), [
        _rows(night1[:7], [TEXTS[k] for k in night1[:7]], "fp-1", labels1[:7], errors1[:7]),
        _rows(night1[7:], [TEXTS[k] for k in night1[7:]], "fp-1", labels1[7:], errors1[7:]),
    ])
    # night 2: r2 re-labeled after a text edit, r4's error re-labeled, r12 new with a non-text (null hash)
    _commit(partition_root(root, "2026-11-21"), [
        _rows(["r2", "r4", "r12"], ["text 2 edited", TEXTS["r4"], None], "fp-1", ["c", "a", None], [None, None, "empty text"]),
    ])
    # night 3: a new labeler for r0..r2 and r13
    _commit(partition_root(root, "2026-11-22"), [
        _rows(["r0", "r1", "r2", "r13"], [TEXTS["r0"], TEXTS["r1"], "text 2 edited", TEXTS["r13"]], "fp-2",
              ["b", "b", "b", "c"], [None] * 4),
    ])
    crashed = partition_root(root, "2026-11-23")
    crashed.mkdir(parents=True)
    pq.write_table(_rows(["r0"], ["x"], "fp-9", ["c"], [None]), crashed / "part-00000-00000.parquet")


def partition_root(root: Path, date: str) -> Path:
    return Path(partition_url(str(root), date))


def _reference_latest_keys(root: Path, before: str) -> dict[str, tuple]:
    latest: dict[str, tuple] = {}
    for date in ("2026-11-20", "2026-11-21", "2026-11-22"):
        if date >= before:
            break
        for name in sorted(p.name for p in partition_root(root, date).glob("part-*.parquet")):
            table = pq.read_table(partition_root(root, date) / name)
            columns = [table.column(c).to_pylist() for c in ["id", "text_hash", "labeler_fingerprint", "label", "error"]]
            for key, digest, fingerprint, label, error in zip(*columns):
                latest[key] = (digest, fingerprint, label, error, date)
    return latest


def _reference_reason(before, digest, fingerprint, relabel_errors):
    if before is None:
        return "new"
    if before[0] != digest:
        return "changed_text"
    if before[1] != fingerprint:
        return "fingerprint"
    if relabel_errors and before[3] is not None:
        return "error"
    return None


def _reference_stage(corpus: pa.Table, previous: dict, fingerprint: str, relabel_errors: bool):
    counts = Counter({"new": 0, "changed_text": 0, "fingerprint": 0, "error": 0, "unchanged": 0})
    ids, reasons = corpus.column("id").to_pylist(), []
    for key, text in zip(ids, corpus.column("text").to_pylist()):
        digest = text_hash(text) if isinstance(text, str) else None
        reason = _reference_reason(previous.get(key), digest, fingerprint, relabel_errors)
        counts[reason or "unchanged"] += 1
        reasons.append(reason)
    counts["corpus"] = corpus.num_rows
    counts["relabel"] = sum(r is not None for r in reasons)
    counts["removed"] = len(set(previous) - set(ids))
    return reasons, dict(counts)


def _reference_distribution(reasons, ids, tonight: dict, previous: dict) -> dict[str, float]:
    chosen = [tonight[k] if r is not None else previous[k][2:4] for k, r in zip(ids, reasons)]
    counts = Counter(label if error is None else ERROR_LABEL for label, error in chosen)
    total = sum(counts.values()) or 1
    keys = NAMES + ([ERROR_LABEL] if counts.get(ERROR_LABEL) else [])
    return {key: counts.get(key, 0) / total for key in keys}


def _tonight_corpus(path: Path) -> pa.Table:
    """r0..r14 minus r5, r6 (removed), r3 edited, r12 still a non-text, r14 and r15 new."""
    ids = [f"r{i}" for i in range(16) if i not in (5, 6)]
    texts = {**TEXTS, "r2": "text 2 edited", "r3": "text 3 edited", "r12": None}
    table = pa.table({"id": ids, "text": pa.array([texts[k] for k in ids], pa.string())})
    pq.write_table(table, path)
    return table


def test_arrow_nightly_equals_the_dict_nightly_on_a_fixed_history(tmp_path):
    root = tmp_path / "nightly"
    _history(root)
    previous = latest_keys(str(root), STORAGE, before="2026-11-24")
    reference = _reference_latest_keys(root, before="2026-11-24")
    as_dict = {row["id"]: (row["text_hash"], row["labeler_fingerprint"], row["label"], row["error"], row["date"])
               for row in previous.to_pylist()}
    assert as_dict == reference and previous.num_rows == len(reference) == 14
    assert as_dict["r2"][1:] == ("fp-2", "b", None, "2026-11-22") and as_dict["r12"][0] is None
    # the rows keep the order of the rows holding the latest labels (the dict's insertion order differs)
    assert previous.column("id").to_pylist()[:4] == ["r3", "r5", "r6", "r7"]
    assert latest_keys(str(root), STORAGE, before="2026-11-20").num_rows == 0

    corpus = _tonight_corpus(tmp_path / "corpus.parquet")
    job = parse_job({"name": "n", "input": {"path": str(tmp_path / "corpus.parquet")}, "labels": NAMES,
                     "method": {"name": "embed", "head": str(tmp_path / "head")}, "output": {"path": str(tmp_path / "o")}})
    for fingerprint in ("fp-1", "fp-2"):
        for relabel_errors in (True, False):
            delta, keys, counts = stage_delta(job, STORAGE, previous, fingerprint, relabel_errors)
            reasons, expected = _reference_stage(corpus, reference, fingerprint, relabel_errors)
            assert counts == expected and list(counts) == list(expected)
            assert keys.column("id").to_pylist() == corpus.column("id").to_pylist()
            assert keys.column(REASON_COLUMN).to_pylist() == reasons
            wanted = [k for k, r in zip(corpus.column("id").to_pylist(), reasons) if r is not None]
            assert delta.column("id").to_pylist() == wanted
            assert delta.column(REASON_COLUMN).to_pylist() == [r for r in reasons if r is not None]
    assert counts["removed"] == 2 and counts["new"] == 2 and counts["changed_text"] == 1

    # tonight (fp-2, relabel errors): stage, label the delta, then the corpus label shares
    delta, keys, counts = stage_delta(job, STORAGE, previous, "fp-2", True)
    partition = partition_root(root, "2026-11-24")
    write_staged(str(partition / CORPUS_KEYS), STORAGE, keys, {"counts": counts})
    ids = delta.column("id").to_pylist()
    errors = ["bad | reply <script>" if k == "r12" else None for k in ids]
    labels = [None if e else NAMES[len(k) % 3] for k, e in zip(ids, errors)]
    _commit(partition, [_rows(ids, delta.column("text").to_pylist(), "fp-2", labels, errors)])
    shares = current_distribution(str(partition), STORAGE, previous, True, NAMES)
    tonight = dict(zip(ids, zip(labels, errors)))
    expected = _reference_distribution(keys.column(REASON_COLUMN).to_pylist(), keys.column("id").to_pylist(),
                                       tonight, reference)
    assert shares == expected and list(shares) == list(expected) and ERROR_LABEL in shares

    # the merged view: the dict version kept the index of each id's last row, sorted
    merged = current_labels(str(root), STORAGE)
    stacked = pa.concat_tables([
        pq.read_table(path).append_column("date", pa.array([path.parent.name[5:]] * pq.read_metadata(path).num_rows))
        for path in sorted(root.glob("date=*/part-*.parquet")) if (path.parent / "_manifest.json").exists()
    ], promote_options="permissive")
    seen = {key: index for index, key in enumerate(stacked.column("id").to_pylist())}
    assert merged.equals(stacked.take(pa.array(sorted(seen.values()))))
