"""Report metrics against hand-computed values."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pyarrow as pa
import pytest

from batchlabel.io.storage import StorageSettings
from batchlabel.report.metrics import build_report, compute_metrics
from batchlabel.report.writers import write_report

LABELS = ["pos", "neg", "neu"]


def test_metrics_match_hand_computed_values():
    gold = ["pos", "pos", "pos", "neg", "neg", "neu"]
    pred = ["pos", "pos", "neg", "neg", "pos", "neu"]
    m = compute_metrics(gold, pred, LABELS)
    # pos: tp=2 fp=1 fn=1 -> p=2/3 r=2/3 f1=2/3; neg: tp=1 fp=1 fn=1 -> 1/2; neu: tp=1 -> 1
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["pos"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["neg"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["neu"]["f1"] == pytest.approx(1.0)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 1 * 1.0) / 6)
    assert m["confusion_matrix"]["labels"] == LABELS
    assert m["confusion_matrix"]["matrix"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_error_rows_count_as_wrong_and_get_a_column():
    m = compute_metrics(["pos", "neg"], ["pos", None], LABELS)
    assert m["accuracy"] == 0.5
    assert m["confusion_matrix"]["labels"] == LABELS + ["(error)"]
    assert m["confusion_matrix"]["matrix"][1] == [0, 0, 0, 1]
    assert m["per_class"]["neg"]["recall"] == 0.0


def test_build_report_counts_and_gold_outside_label_set():
    table = pa.table(
        {
            "label": ["pos", "neg", None, "neu"],
            "gold": ["pos", "pos", "neg", "sarcasm"],
            "error": [None, None, "empty text", None],
            "confidence": [0.9, 0.6, None, 0.5],
            "truncated": [False, True, False, False],
        }
    )
    report = build_report(table, LABELS, {"wall_time_s": 2.0})
    assert report["rows"] == 4 and report["labeled_rows"] == 3 and report["error_rows"] == 1
    assert report["truncated_rows"] == 1
    assert report["error_reasons"] == {"empty text": 1}
    assert report["label_distribution"] == {"pos": 1, "neg": 1, "neu": 1}
    assert report["gold_outside_label_set"] == {"rows": 1, "examples": ["sarcasm"]}
    assert report["metrics"]["rows"] == 3
    assert report["metrics"]["accuracy"] == pytest.approx(1 / 3)
    assert report["metrics"]["mean_confidence_correct"] == pytest.approx(0.9)


def test_report_without_gold_has_no_metrics(tmp_path):
    table = pa.table({"label": ["pos"], "gold": pa.nulls(1, pa.string()), "error": pa.nulls(1, pa.string()),
                      "confidence": [0.7], "truncated": [False]})
    report = build_report(table, LABELS)
    assert "metrics" not in report
    files = write_report(report, str(tmp_path), StorageSettings(), "t")
    assert not (tmp_path / "confusion_matrix.png").exists()
    assert "no gold labels" in (tmp_path / "report.md").read_text()
    assert [f.rsplit("/", 1)[-1] for f in files] == ["report.json", "report.md", "report.html"]


def test_report_files_written(tmp_path):
    table = pa.table({"label": ["pos", "neg"], "gold": ["pos", "pos"], "error": pa.nulls(2, pa.string()),
                      "confidence": [0.7, 0.8], "truncated": [False, False]})
    write_report(build_report(table, LABELS), str(tmp_path), StorageSettings(), "t")
    png = (tmp_path / "confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "report.json").read_text())["metrics"]["accuracy"] == 0.5
    assert "![confusion matrix](confusion_matrix.png)" in (tmp_path / "report.md").read_text()
    assert "| pos | 1.000 | 0.500 | 0.667 | 2 |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_metrics_equal_scikit_learn(seed):
    """The report is computed column-wise (flat memory at millions of rows); it must give scikit-learn's numbers."""
    import numpy as np
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c", "d", "e"]
    gold = [labels[i] for i in rng.integers(0, 4, 300)]  # "e" never gold
    pool = [*labels[:3], None]  # "d" never predicted, some error rows
    pred = [pool[i] for i in rng.integers(0, 4, 300)]
    m = compute_metrics(gold, pred, labels)
    y_pred = [p if p is not None else "(error)" for p in pred]
    used = [label for label in labels if label in set(gold) | set(y_pred)]
    precision, recall, f1, support = precision_recall_fscore_support(gold, y_pred, labels=used, zero_division=0)
    assert list(m["per_class"]) == used == ["a", "b", "c", "d"]
    for i, label in enumerate(used):
        assert m["per_class"][label] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}, abs=1e-12)
    assert m["macro_f1"] == pytest.approx(float(np.mean(f1)), abs=1e-12)
    assert m["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, y_pred)) / 300, abs=1e-12)
    assert m["confusion_matrix"]["labels"] == labels + ["(error)"]
    assert m["confusion_matrix"]["matrix"] == confusion_matrix(gold, y_pred, labels=labels + ["(error)"]).tolist()


def test_extra_sections_end_report_md_and_html(tmp_path):
    """Callers add sections (the nightly drift) before the one write: appended to report.md, rendered in the HTML."""
    table = pa.table({"label": ["pos"], "gold": ["pos"], "error": pa.nulls(1, pa.string()),
                      "confidence": [0.7], "truncated": [False]})
    report = {**build_report(table, LABELS), "drift": {"status": "ok"}}
    write_report(report, str(tmp_path), StorageSettings(), "t")
    plain = (tmp_path / "report.md").read_text()
    section = "## Drift vs previous night (none)\n\n- night: 2026-11-24, status: **ok**\n"
    write_report(report, str(tmp_path), StorageSettings(), "t", sections=[section, "## Last\n"])
    assert (tmp_path / "report.md").read_text() == plain.rstrip("\n") + "\n\n" + section + "\n## Last\n"
    assert "<h2>Drift vs previous night (none)</h2>" in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["drift"] == {"status": "ok"}


class _Page(HTMLParser):
    """What report.html holds: tags seen, header texts, table cells, image sources."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text: dict[str, list[str]] = {}
        self.images: list[dict] = []
        self._open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag not in ("meta", "br"):
            self._open.append(tag)

    def handle_endtag(self, tag):
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data):
        if self._open and data.strip():
            self.text.setdefault(self._open[-1], []).append(data.strip())


def _gold_table(n=400, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    gold = [LABELS[i] for i in rng.integers(0, 3, n)]
    confidence = rng.uniform(0.34, 1.0, n)
    right = rng.random(n) < confidence
    label = [g if r else LABELS[(LABELS.index(g) + 1) % 3] for g, r in zip(gold, right)]
    return pa.table({"label": label, "gold": gold, "error": pa.nulls(n, pa.string()),
                     "confidence": confidence.astype("float32"), "truncated": [False] * n})


def _check_html_report(html_text: str, pictures: dict[str, bytes]) -> _Page:
    page = _Page()
    page.feed(html_text)
    assert "pre" not in page.tags and "script" not in page.tags
    assert page.text["h1"] == ["t <b>"]
    assert {"Confidence", "Accuracy vs coverage", "Label distribution"} <= set(page.text["h2"] + page.text["h3"])
    assert page.tags.count("table") == 5  # per-class, coverage, thresholds, label distribution, drift rows
    assert "ECE" not in " ".join(page.text["th"]) and "target accuracy" in page.text["th"]
    assert "**" not in html_text and "|---" not in html_text
    assert {image["alt"] for image in page.images} == {"confusion matrix", "reliability diagram",
                                                      "accuracy-coverage curve"}
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(image["src"].split(",", 1)[1]) in pictures.values()
    return page


def test_report_has_calibration_and_a_self_contained_html_page(tmp_path):
    """report.html is real HTML: tables as <table>, PNGs inlined, text escaped; report.md links the PNG files."""
    report = build_report(_gold_table(), LABELS)
    calibration = report["calibration"]
    assert calibration["rows"] == 400 and 0.5 < calibration["auroc"] < 1 and calibration["ece"] < 0.15
    assert [t["target"] for t in calibration["thresholds"]] == [0.9, 0.95, 0.99]
    drift = "## Drift\n\n| night | status |\n|---|---|\n| 2026-11-24 | <script>alert(1)</script> |\n"
    files = write_report(report, str(tmp_path), StorageSettings(), "t <b>", sections=[drift])
    names = [f.rsplit("/", 1)[-1] for f in files]
    assert names == ["confusion_matrix.png", "reliability.png", "accuracy_coverage.png",
                     "report.json", "report.md", "report.html"]
    pictures = {name: (tmp_path / name).read_bytes() for name in names if name.endswith(".png")}
    markdown = (tmp_path / "report.md").read_text()
    for name in pictures:
        assert f"]({name})" in markdown
    assert "min_confidence" in markdown
    page = _check_html_report((tmp_path / "report.html").read_text(), pictures)
    assert "<script>alert(1)</script>" in page.text["td"]  # shown as text, not run
    assert json.loads((tmp_path / "report.json").read_text())["calibration"]["ece"] == calibration["ece"]


@pytest.mark.slow
def test_report_with_pictures_written_to_s3(s3_bucket):
    from batchlabel.io.storage import join

    storage = StorageSettings()
    output = join(s3_bucket, "run")
    report = build_report(_gold_table(), LABELS)
    files = write_report(report, output, storage, "t <b>", sections=["## Drift\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"])
    assert len(files) == 6 and all(storage.exists(f) for f in files)
    pictures = {name: storage.read_bytes(join(output, name)) for name in
                ("confusion_matrix.png", "reliability.png", "accuracy_coverage.png")}
    _check_html_report(storage.read_bytes(join(output, "report.html")).decode(), pictures)


class _Events(HTMLParser):
    """A page as (start tag + attributes | end tag | text) events; whitespace between tags and inside texts
    collapsed, as a browser shows it."""

    def __init__(self, page: str):
        super().__init__()
        self.events: list[tuple] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.events.append(("start", tag, tuple(sorted(attrs))))

    def handle_endtag(self, tag):
        self.events.append(("end", tag))

    def handle_data(self, data):
        if data.strip():
            self.events.append(("text", " ".join(data.split())))


def test_markdown_it_renders_the_demo_report_as_the_hand_written_converter_did():
    """tests/fixtures: the demo job's report.md (R8, 8 labels, metrics, confidence, error reasons, drift) and the
    <body> of the report.html the hand-written converter made of it (commit 15bbbc9): the same page, element for
    element (the <head> is the same code: title and style)."""
    from pathlib import Path

    from batchlabel.report import markdown as md
    from batchlabel.report.html import markdown_to_html

    fixtures = Path(__file__).parent / "fixtures"
    images = {md.CONFUSION_PNG: b"confusion-png", md.RELIABILITY_PNG: b"reliability-png", md.COVERAGE_PNG: b"coverage-png"}
    page = markdown_to_html((fixtures / "demo_report.md").read_text(), "batchlabel report: reuters-embed", images)
    before = _Events((fixtures / "demo_report_body.html").read_text()).events
    body = page.split("<body>", 1)[1].split("</body>", 1)[0]
    assert _Events(body).events == before and len(before) > 600
    assert page.startswith("<!doctype html>") and "<title>batchlabel report: reuters-embed</title>" in page
    missing = markdown_to_html("![confusion matrix](confusion_matrix.png)\n", "t")
    assert '<p class="missing">[picture confusion_matrix.png not available]</p>' in missing


def test_error_reasons_and_labels_render_safely_in_report_md_and_html(tmp_path):
    """A `|`, a newline and a <script> in a model's reply stay inside their table cell, shown as written."""
    reason = "bad reply: a | b\n<script>alert(1)</script> **x** `y` [z](http://e) & _w_"
    table = pa.table({"label": ["pos", None, "ne|g"], "gold": ["pos", "neg", "pos"], "error": [None, reason, None],
                      "confidence": [0.9, None, 0.4], "truncated": [False] * 3})
    write_report(build_report(table, ["pos", "ne|g", "neu"]), str(tmp_path), StorageSettings(), "t")
    markdown = (tmp_path / "report.md").read_text()
    row = [line for line in markdown.splitlines() if "alert" in line]
    assert len(row) == 1 and row[0].endswith(" | 1 |") and "<script>" not in markdown
    assert row[0].replace("\\|", "").count("|") == 3  # the escaped pipe does not open a third cell
    page = _Page()
    page.feed((tmp_path / "report.html").read_text())
    assert "script" not in page.tags and "a" not in page.tags and "em" not in page.tags
    shown = " ".join(reason.split())
    assert shown in page.text["td"]  # one cell, literally the reply (newline as a space)
    assert page.text["td"][page.text["td"].index(shown) + 1] == "1"
    assert page.text["td"].count("ne|g") == 2  # the label in the per-class and the distribution tables
