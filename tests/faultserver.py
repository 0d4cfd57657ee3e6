"""A stand-in OpenAI-compatible server on 127.0.0.1 for the faults a real server does not show on
demand (faultproxy.py puts faults in front of a real one; these need no model behind them):
  "answer"       200 with a completion ("The answer is 2.") and `usage` as given (None: no usage at all)
  "echo_auth"    401 whose body echoes the request's Authorization header, as some proxies do
  "trickle"      200 announcing 1000 bytes, then sending one byte a second
  "endless"      200 with a chunked body whose chunks never stop
  "retry_after"  429 with `Retry-After: <retry_after>` for the first `faults` requests, then "answer"
  "slow"         "answer", after `delay_s` seconds (a request long in flight, as a big model's is)
A trickle or an endless body stops after `give_up_s` (the connection is closed), so a client
without a deadline ends too, only later: every test stays bounded in time.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler

from loopback import LoopbackServer, QuietHandler

NORMAL_USAGE = {"prompt_tokens": 10, "completion_tokens": 5}


class FaultServer(LoopbackServer):
    def __init__(self, mode: str, *, usage: dict | None = NORMAL_USAGE, retry_after: str = "999999", faults: int = 1,
                 give_up_s: float = 25.0, delay_s: float = 3.0):
        self.mode = mode
        self.usage = usage
        self.retry_after = retry_after
        self.faults = faults
        self.give_up_s = give_up_s
        self.delay_s = delay_s
        self.requests = 0
        self.authorization: list[str | None] = []
        self.paths: list[str] = []
        super().__init__()




    def _arrived(self, handler: BaseHTTPRequestHandler) -> int:
        with self._lock:
            self.requests += 1
            self.authorization.append(handler.headers.get("Authorization"))
            self.paths.append(handler.path)
            return self.requests

    def _completion(self, chat: bool) -> bytes:
        choice = {"message": {"role": "assistant", "content": "The answer is 2."}} if chat else {"text": "The answer is 2."}
        body: dict = {"object": "chat.completion" if chat else "text_completion",
                      "choices": [{**choice, "index": 0, "finish_reason": "stop"}]}
        if self.usage is not None:
            body["usage"] = self.usage
        return json.dumps(body).encode()

    def _handler_class(self):
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                try:
                    self._answer()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up or stopped: its business
                    self.close_connection = True

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                n = server._arrived(self)
                chat = self.path.partition("?")[0].endswith("/chat/completions")
                if server.mode == "echo_auth":
                    body = json.dumps({"error": "invalid api key", "received": {"authorization": self.headers.get("Authorization")},
                                       "note": f"you sent {self.headers.get('Authorization')}"})
                    self._reply(401, body.encode())
                elif server.mode in ("trickle", "endless"):
                    self._trickle() if server.mode == "trickle" else self._endless()
                    self.close_connection = True
                elif server.mode == "slow" and server._stop.wait(server.delay_s):
                    self.close_connection = True  # the server stops: no answer
                elif server.mode == "retry_after" and n <= server.faults:
                    self._reply(429, b'{"error": "slow down"}', {"Retry-After": server.retry_after})
                else:
                    self._reply(200, server._completion(chat))

            def _trickle(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                end = time.monotonic() + server.give_up_s
                while time.monotonic() < end and not server._stop.wait(1.0):
                    self.wfile.write(b" ")
                    self.wfile.flush()

            def _endless(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                end = time.monotonic() + server.give_up_s
                while time.monotonic() < end and not server._stop.wait(0.2):
                    self.wfile.write(b"1\r\n \r\n")
                    self.wfile.flush()

        return Handler
