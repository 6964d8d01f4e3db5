"""A loopback HTTP proxy in front of a real OpenAI-compatible server (`vllm serve`) that behaves like a hosted
API with a quota: it answers scheduled requests (by arrival number) with 429 + Retry-After or 503, rejects
requests whose body holds a marker (and no scheduled fault) with a 401 that echoes the API key (as hosted APIs
do), and forwards the rest. It records every request's arrival time (wall clock), body hash and Authorization
header, and sums the ``usage`` of the answers it forwarded: what the server says the run spent.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from flaky_proxy import HOP_BY_HOP, ServedInThread


@dataclass
class Arrival:
    at: float  # time.time() when the request arrived
    body: str  # sha256 of the request body (a retried request is sent again with the same body)
    status: int  # what the proxy answered
    authorization: str | None
    client: tuple[str, int]  # the client's address (one per connection)


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    answers: int = 0


@dataclass
class Fault:
    status: int  # 429 or 503 (or any status)
    retry_after: str | None = None  # header value as sent; "date+N" = an HTTP date N seconds ahead


@dataclass
class ApiProxy(ServedInThread):
    upstream: str
    schedule: dict[int, Fault] = field(default_factory=dict)  # 0-based arrival number -> fault
    reject_marker: str | None = None  # a body containing it is answered 401, echoing the Authorization key

    def __post_init__(self):
        self.lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self.usage = Usage()
        self._target = urlparse(self.upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization")
                fault, number = proxy._arrive(body, auth, self.client_address)
                if fault is not None:
                    headers = {"Content-Type": "application/json"}
                    if fault.retry_after is not None:
                        value = fault.retry_after
                        if value.startswith("date+"):
                            value = formatdate(time.time() + float(value[5:]), usegmt=True)
                        headers["Retry-After"] = value
                    proxy._answered(number, fault.status)
                    error = {"error": {"message": f"proxy fault {fault.status}", "code": str(fault.status)}}
                    return self._reply(fault.status, json.dumps(error).encode(), headers)
                if proxy.reject_marker and proxy.reject_marker.encode() in body:
                    key = (auth or "").removeprefix("Bearer ")
                    message = {"error": {"message": f"Incorrect API key provided: {key}.", "code": "invalid_api_key"}}
                    proxy._answered(number, 401)
                    return self._reply(401, json.dumps(message).encode(), {"Content-Type": "application/json"})
                connection = http.client.HTTPConnection(proxy._target.hostname, proxy._target.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                connection.close()
                proxy._answered(number, response.status)
                if response.status == 200 and self.path.endswith("/chat/completions"):
                    proxy._count(json.loads(data).get("usage") or {})
                passed = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}}
                self._reply(response.status, data, passed)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _arrive(self, body: bytes, auth: str | None, client: tuple[str, int]) -> tuple[Fault | None, int]:
        with self.lock:
            number = len(self.arrivals)
            self.arrivals.append(Arrival(time.time(), hashlib.sha256(body).hexdigest(), 0, auth, client))
            return self.schedule.get(number), number

    def _answered(self, number: int, status: int) -> None:
        with self.lock:
            self.arrivals[number].status = status

    def _count(self, usage: dict) -> None:
        with self.lock:
            self.usage.prompt_tokens += usage.get("prompt_tokens") or 0
            self.usage.completion_tokens += usage.get("completion_tokens") or 0
            self.usage.cached_tokens += (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            self.usage.answers += 1

    def max_in_window(self, window_s: float) -> int:
        """Most requests that arrived within any closed window of ``window_s`` seconds."""
        times = sorted(a.at for a in self.arrivals)
        most, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] > window_s:
                start += 1
            most = max(most, end - start + 1)
        return most
