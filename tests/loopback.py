"""The HTTP servers tests start on 127.0.0.1 (faultproxy.py, faultserver.py): a threaded server
on a free port, serving the handler class its subclass builds, for the length of a `with` block."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """A keep-alive handler that logs nothing (the test's own output is what is checked) and answers JSON."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: bytes, headers: dict | None = None) -> None:
        """A whole JSON answer: status, headers, body."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (a request cancelled, a connection dropped on purpose) is its own
        business: no traceback on the test's stderr, where the CLI's own output is checked."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer:
    def __init__(self) -> None:
        """Call at the end of a subclass's __init__: its handler may read what it set."""
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set on exit: handlers that stream or hang stop early
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler_class(self) -> type:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The OpenAI base URL to give a client."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
