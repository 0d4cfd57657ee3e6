"""A fault-injection HTTP proxy for testing teachers against a REAL server.

It listens on 127.0.0.1 and forwards requests to an upstream OpenAI-compatible server, except
that the first requests it receives are answered by the next fault in a queue:
  "429"        Too Many Requests with `Retry-After: <retry_after>`
  "500"        Internal Server Error
  "garbage"    200 with a body that is not JSON
  "no_choices" 200 with valid JSON that lacks "choices"
  "hang"       no answer at all (the client must time out), then the connection is closed
  "drop"       the connection is closed without a response
Faulted requests never reach the upstream, so `forwarded` counts the work the server really did.
This is the only fake in the test suite, and it only injects faults.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import deque

from loopback import LoopbackServer, QuietHandler

FAULTS = ("429", "500", "garbage", "no_choices", "hang", "drop")


class FaultProxy(LoopbackServer):
    def __init__(self, upstream: str, retry_after: float = 0.2, hang_s: float = 30.0):
        """`upstream` is the server's root URL (http://127.0.0.1:PORT), without /v1."""
        self.upstream = upstream.rstrip("/")
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.received = 0
        self.forwarded = 0
        self.faults_served: list[str] = []
        self.authorization: list[str] = []  # the Authorization headers seen (to check a key was sent)
        self._faults: deque[str] = deque()
        super().__init__()


    def set_faults(self, faults: list[str]) -> None:
        """Queue faults for the next requests and reset the counters."""
        unknown = set(faults) - set(FAULTS)
        assert not unknown, f"unknown faults {unknown}"
        with self._lock:
            self._faults = deque(faults)
            self.received = self.forwarded = 0
            self.faults_served = []
            self.authorization = []



    def _next_fault(self, auth: str | None) -> str | None:
        with self._lock:
            self.received += 1
            if auth:
                self.authorization.append(auth)
            fault = self._faults.popleft() if self._faults else None
            if fault:
                self.faults_served.append(fault)
            else:
                self.forwarded += 1
            return fault

    def _handler_class(self):
        proxy = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._next_fault(self.headers.get("Authorization"))
                if fault is None:
                    self._forward(body)
                elif fault == "hang":
                    proxy._stop.wait(proxy.hang_s)
                    self.close_connection = True
                elif fault == "drop":
                    self.close_connection = True
                elif fault == "429":
                    self._reply(429, b'{"error": "rate limited"}', {"Retry-After": f"{proxy.retry_after:g}"})
                elif fault == "500":
                    self._reply(500, b'{"error": "internal"}')
                elif fault == "garbage":
                    self._reply(200, b"<html>upstream gateway hiccup{")
                else:  # no_choices
                    self._reply(200, b'{"object": "text_completion", "model": "x"}')

            def _forward(self, body: bytes | None) -> None:
                req = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command)
                req.add_header("Content-Type", self.headers.get("Content-Type", "application/json"))
                try:
                    with urllib.request.urlopen(req, timeout=600) as r:
                        self._reply(r.status, r.read())
                except urllib.error.HTTPError as e:
                    self._reply(e.code, e.read())

        return Handler
