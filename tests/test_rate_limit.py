"""Rate limits, Retry-After, token accounting and the report's usage section, without a server (fast).

The real-server checks (3 actors behind a proxy that answers 429/503) are in tests/test_llm_openai.py.
"""

from __future__ import annotations

import random
import threading
import time
from email.utils import formatdate

import numpy as np
import pyarrow as pa
import pytest

from batchlabel.config.engines import RateLimitSpec
from batchlabel.engines.base import Generation, TokenUsage
from batchlabel.engines.rate_limit import (
    MAX_RETRY_AFTER_S,
    Buckets,
    Limiter,
    retry_after,
)
from batchlabel.methods.llm import apportion, split_evenly
from batchlabel.report.usage import usage_markdown, usage_section


def window_counts_within_bound(times: list[float], costs: list[float], burst: float, rate: float) -> bool:
    """Over every window [t_i, t_j]: the cost sent is at most burst + rate·(t_j - t_i) (plus, for a last
    request larger than the burst, its excess: it waits for a full bucket and leaves it in debt)."""
    order = np.argsort(times, kind="stable")
    t, c = np.asarray(times)[order], np.asarray(costs)[order]
    cumulative = np.concatenate([[0.0], np.cumsum(c)])
    for i in range(len(t)):
        for j in range(i, len(t)):
            if cumulative[j + 1] - cumulative[i] > burst + rate * (t[j] - t[i]) + max(0.0, c[j] - burst) + 1e-9:
                return False
    return True


@pytest.mark.parametrize("seed", range(5))
def test_buckets_keep_every_window_within_burst_plus_rate(seed):
    """Random arrivals of requests with random token costs (some above the burst): the send times the buckets
    give keep both the request and the token counts of ANY window within burst + rate·window."""
    rng = random.Random(seed)
    spec = RateLimitSpec(requests_per_minute=rng.choice([30, 120, 600]), tokens_per_minute=3000,
                         burst_s=rng.choice([0.5, 1.0, 5.0]))
    buckets = Buckets(spec)
    now, sends, costs = 0.0, [], []
    for _ in range(150):
        now += rng.expovariate(5.0)
        cost = rng.choice([5, 20, 80, 400])  # 3000/min -> burst 25..250 tokens: 400 is above it
        sends.append(buckets.reserve(cost, now=now))
        costs.append(cost)
        assert sends[-1] >= now
    assert window_counts_within_bound(sends, [1] * len(sends), buckets.requests.burst, buckets.requests.rate)
    assert window_counts_within_bound(sends, costs, buckets.tokens.burst, buckets.tokens.rate)
    # and it is not slower than it must be: a request waits only when some bucket is short
    fresh = Buckets(spec)
    assert fresh.reserve(1, now=100.0) == 100.0


def test_settle_corrects_the_estimate_and_pause_holds_everyone():
    buckets = Buckets(RateLimitSpec(tokens_per_minute=600, burst_s=1.0))  # 10 tokens/s, burst 10
    assert buckets.reserve(10, now=0.0) == 0.0
    assert buckets.reserve(10, now=0.0) == pytest.approx(1.0)  # the bucket was empty
    buckets.settle(estimate=10, actual=2)  # the answer used 2 of the 10 booked: 8 back
    assert buckets.reserve(8, now=0.0) == pytest.approx(1.0)
    buckets.pause(until=50.0)
    assert buckets.reserve(1, now=10.0) == 50.0


def test_retry_after_in_seconds_milliseconds_and_http_date():
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "0.5"}) == 0.5
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    now = time.time()
    assert retry_after({"retry-after": formatdate(now + 30, usegmt=True)}, now=now) == pytest.approx(30, abs=1)
    assert retry_after({"retry-after": formatdate(now - 30, usegmt=True)}, now=now) == 0.0  # already past
    assert retry_after({"retry-after": "86400"}) == MAX_RETRY_AFTER_S
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None and retry_after(None) is None


def _status_error(code: int, headers: dict[str, str] | None = None, message: str | None = None):
    import httpx
    import openai

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(code, request=request, headers=headers or {})
    cls = {429: openai.RateLimitError, 401: openai.AuthenticationError}.get(code, openai.InternalServerError)
    return cls(message or f"status {code}", response=response, body=None)


def test_retries_wait_the_servers_retry_after_and_pause_the_limiter():
    pytest.importorskip("openai")
    from batchlabel.engines.remote import retryable, with_retries

    limiter = Limiter(RateLimitSpec(requests_per_minute=6000, tokens_per_minute=60000))
    failures = [_status_error(429, {"retry-after": "0.6"}), _status_error(503, {"retry-after-ms": "300"})]
    calls: list[float] = []

    def flaky() -> Generation:
        calls.append(time.time())
        if failures:
            raise failures.pop(0)
        return Generation("ok", 30, 5)

    result = with_retries(flaky, retries=3, is_retryable=retryable, limiter=limiter, estimate=100)
    assert result.text == "ok" and len(calls) == 3
    assert calls[1] - calls[0] >= 0.6 and calls[2] - calls[1] >= 0.3  # the server's waits, not our backoff
    assert limiter.buckets.paused_until > 0  # a Retry-After holds every request of the job, not only this one
    # the two refused requests gave their 100 estimated tokens back, the answer kept the 35 it used: the token
    # bucket (1000/s) is full again 35 ms after the last send
    assert limiter.buckets.tokens.tat == pytest.approx(calls[2] + 0.035, abs=0.02)


def test_error_rows_never_carry_the_api_key():
    pytest.importorskip("openai")
    from batchlabel.engines.remote import retryable, with_retries

    secret = "sk-PLANTED-abc123"

    def rejected() -> Generation:
        raise _status_error(401, message=f"Incorrect API key provided: {secret}.")

    result = with_retries(rejected, retries=3, is_retryable=retryable, secrets=(secret,))
    assert secret not in result.error and "***" in result.error and "after 1 tries" in result.error


def test_threads_sharing_one_limiter_stay_within_the_bound():
    """8 threads hammer one in-process limiter of 1200 requests/min (20/s, burst 2): measured send times."""
    limiter = Limiter(RateLimitSpec(requests_per_minute=1200, burst_s=0.1))
    sent: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(3):
            limiter.acquire(0)
            with lock:
                sent.append(time.time())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    jitter = 0.05  # allowance: a thread wakes up after its send time
    assert window_counts_within_bound(sent, [1] * 24, 2 + 20 * jitter, 20.0)
    assert max(sent) - min(sent) >= (24 - 2) / 20 - jitter  # 24 requests: the burst, then 20/s


def test_apportioned_tokens_sum_exactly_and_keep_cached_below_prompt():
    assert split_evenly(10, 3) == [4, 3, 3] and split_evenly(2, 4) == [1, 1, 0, 0] and sum(split_evenly(0, 5)) == 0
    for prompt, cached, output, n in [(1001, 640, 37, 7), (5, 5, 0, 3), (123457, 99991, 4242, 64)]:
        counts = apportion(TokenUsage(prompt, cached, output), n)
        assert (sum(counts.prompt), sum(counts.cached), sum(counts.output)) == (prompt, cached, output)
        assert all(c <= p for c, p in zip(counts.cached, counts.prompt))
        assert max(counts.prompt) - min(counts.prompt) <= 1


def test_usage_section_totals_per_label_and_cost():
    table = pa.table({
        "label": ["earn", None, "acq", "earn"],
        "tokens_prompt": pa.array([100, 50, 70, 30], pa.int64()),
        "tokens_cached": pa.array([64, 0, 0, 0], pa.int64()),
        "tokens_output": pa.array([5, 0, 4, 6], pa.int64()),
    })
    price = {"input_per_million": 2.0, "output_per_million": 8.0, "cached_input_per_million": 1.0}
    section = usage_section(table, ["earn", "acq", "crude"], price)
    assert (section["prompt_tokens"], section["cached_prompt_tokens"], section["output_tokens"]) == (250, 64, 15)
    assert section["per_label"]["earn"] == {"rows": 2, "prompt_tokens": 130, "cached_prompt_tokens": 64,
                                            "output_tokens": 11, "cost_usd": pytest.approx((66 * 2 + 64 + 88) / 1e6)}
    assert section["per_label"]["(error)"]["prompt_tokens"] == 50 and "crude" not in section["per_label"]
    assert section["cost"]["total_usd"] == pytest.approx(((250 - 64) * 2 + 64 * 1 + 15 * 8) / 1e6)
    assert section["per_article"]["prompt_tokens"] == 62.5
    lines = usage_markdown(section)
    assert lines[0] == "## Tokens and cost" and any("| earn | 2 | 130 | 64 | 11 |" in line for line in lines)
    # no price: no cost; non-LLM output (null token columns) or output older than the columns: no section
    assert "cost" not in usage_section(table, ["earn", "acq"], None)
    nulls = table.set_column(1, "tokens_prompt", pa.nulls(4, pa.int64()))
    assert usage_section(nulls, ["earn"], price) is None
    assert usage_section(table.drop_columns(["tokens_cached"]), ["earn"], price) is None and usage_markdown(None) == []


def test_label_table_gives_llm_rows_tokens_and_other_methods_nulls():
    from batchlabel.config import parse_job
    from batchlabel.methods.base import Labeler, LabelOutput, TokenCounts
    from batchlabel.run.actor import TOKEN_COLUMNS, label_table, output_schema

    class Counting(Labeler):
        """A labeler whose 'model' answers 'earn' and spends 10 prompt / 1 output token per text."""

        counts_tokens = True
        fingerprint = "f"

        @staticmethod
        def fingerprint_for(spec, storage):
            return "f"

        def label(self, texts):
            if any("poison" in t for t in texts):
                raise RuntimeError("model failure")
            n = len(texts)
            out = LabelOutput.from_probs(np.tile([1.0, 0.0], (n, 1)), ["earn", "acq"], [False] * n)
            out.tokens = TokenCounts([10] * n, [0] * n, [1] * n)
            return out

    method = {"name": "embed", "head": "unused"}
    spec = parse_job({"input": {"path": "unused"}, "labels": ["earn", "acq"], "method": method,
                      "output": {"path": "unused"}, "runtime": {"max_retries": 0}})
    batch = pa.table({"id": ["a", "b", "c", "d"], "text": ["x", None, "poison", "y"], "gold": [None] * 4,
                      "_shard": ["s"] * 4, "_row": [0, 1, 2, 3]})
    table = label_table(spec, Counting(), batch)
    assert table.column("tokens_prompt").to_pylist() == [10, 0, 0, 10]  # null text and the failed row: 0
    assert table.column("tokens_output").to_pylist() == [1, 0, 0, 1]
    assert [table.schema.field(name).type for name in TOKEN_COLUMNS] == [pa.int64()] * 3
    assert set(TOKEN_COLUMNS) <= set(output_schema(spec).names)

    class Plain(Counting):
        counts_tokens = False

        def label(self, texts):
            n = len(texts)
            return LabelOutput.from_probs(np.tile([1.0, 0.0], (n, 1)), ["earn", "acq"], [False] * n)

    plain = label_table(spec, Plain(), batch)
    assert plain.column("tokens_prompt").null_count == 4  # no LLM: null, not 0


def test_outputs_written_before_the_token_columns_still_read_and_report(tmp_path):
    """A shard written before the tokens_* columns existed next to one written after: read together, the old
    rows have null tokens, the report counts the new ones only; an all-old output has no usage section."""
    import json

    import pyarrow.parquet as pq

    from batchlabel.io.sink import MANIFEST, read_committed
    from batchlabel.io.storage import StorageSettings
    from batchlabel.report.metrics import build_report
    from batchlabel.run.pipeline import REPORT_COLUMNS

    base = {"label": ["earn"], "gold": ["earn"], "error": [None], "confidence": [1.0], "truncated": [False],
            "labeler_fingerprint": ["f"]}
    old = pa.table({"id": ["a"], **base})
    new = pa.table({"id": ["b"], **base, "tokens_prompt": pa.array([40], pa.int64()),
                    "tokens_cached": pa.array([16], pa.int64()), "tokens_output": pa.array([3], pa.int64())})
    pq.write_table(old, tmp_path / "part-0.parquet")
    pq.write_table(new, tmp_path / "part-1.parquet")
    manifest = {"shards": [{"file": "part-0.parquet"}, {"file": "part-1.parquet"}]}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    table = read_committed(str(tmp_path), StorageSettings(), columns=REPORT_COLUMNS)
    assert table.column("tokens_prompt").to_pylist() == [None, 40]
    usage = build_report(table, ["earn", "acq"])["usage"]
    assert [usage[k] for k in ("rows", "prompt_tokens", "cached_prompt_tokens", "output_tokens")] == [1, 40, 16, 3]
    (tmp_path / MANIFEST).write_text(json.dumps({"shards": [{"file": "part-0.parquet"}]}))
    old_only = read_committed(str(tmp_path), StorageSettings(), columns=REPORT_COLUMNS)
    assert "tokens_prompt" not in old_only.column_names and "usage" not in build_report(old_only, ["earn"])
