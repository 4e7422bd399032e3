"""A loopback webhook receiver: the demo's stand-in for Slack, and the tests' alert sink.

It listens on 127.0.0.1 only, keeps every JSON body it accepted, and can be told to answer the
first ``fail_first`` requests with HTTP 500 (to exercise the retry path).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """``with WebhookReceiver() as r: ...`` or ``r = WebhookReceiver(); ...; r.close()``."""

    def __init__(self, port: int = 0, fail_first: int = 0, path: str = "/alerts") -> None:
        self.posts: list[dict[str, Any]] = []
        self.failures_left = fail_first
        self.requests = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    outer.requests += 1
                    fail = outer.failures_left > 0
                    if fail:
                        outer.failures_left -= 1
                    else:
                        try:
                            outer.posts.append(json.loads(body or b"{}"))
                        except ValueError:
                            outer.posts.append({"raw": body.decode("utf-8", "replace")})
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:  # keep the console clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
