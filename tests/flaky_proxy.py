"""A loopback HTTP reverse proxy that makes a real S3 endpoint (moto_server) flaky.

For a seeded fraction of requests it answers 503 SlowDown, drops the connection without answering,
or delays the answer; the rest are forwarded unchanged. Used by the S3 fault tests.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOW_DOWN = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>'
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class ServedInThread:
    """A context manager around ``self.server`` (an HTTPServer) served by ``self.thread``."""

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class FlakyProxy(ServedInThread):
    def __init__(self, upstream: str, fault_rate: float = 0.2, seed: int = 0, delay_s: float = 1.0):
        self.upstream = urlparse(upstream)
        self.fault_rate = fault_rate
        self.delay_s = delay_s
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"forwarded": 0, "503": 0, "dropped": 0, "delayed": 0}
        self.answered: list[tuple[str, str, int]] = []  # (method, path, body bytes sent back) per forwarded request
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _read_body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self):
                body = self._read_body()
                fault = proxy._draw()
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":  # a HEAD answer has no body
                        self.wfile.write(SLOW_DOWN)
                    return
                if fault == "dropped":
                    self.close_connection = True
                    return
                if fault == "delayed":
                    time.sleep(proxy.delay_s)
                connection = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                # HEAD answers carry the object's length, not the (empty) body's
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()
                with proxy.lock:
                    proxy.answered.append((self.command, self.path, 0 if self.command == "HEAD" else len(data)))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def bytes_read(self, method: str = "GET") -> int:
        """Body bytes the endpoint sent back to ``method`` requests so far (GET: what clients downloaded)."""
        with self.lock:
            return sum(size for command, _, size in self.answered if command == method)

    def _draw(self) -> str:
        with self.lock:
            roll = self.random.random()
            if roll < self.fault_rate:
                fault = self.random.choice(["503", "dropped", "delayed"])
            else:
                fault = "forwarded"
            self.counts[fault] += 1
            return fault
