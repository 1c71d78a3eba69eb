"""A webhook on 127.0.0.1 that records what apprise's ``json://`` URL posts (the alert tests and
the operations test)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "hookTOKEN9f8e7d6c5b4a3"
FILL_LINE = re.compile(r"^(buy|sell) (\S+) (\w+) @ (\S+) \(fee", re.M)


class Receiver:
    """A webhook on 127.0.0.1: records every JSON body apprise posts (title, message, type)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.messages.append(json.loads(raw))
                    outer.paths.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, token: str = TOKEN) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook/{token}"

    def titled(self, prefix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if m["title"].startswith(prefix)]

    def wait_for(self, pred: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            assert time.monotonic() < deadline, f"gave up waiting for {what}: {self.messages}"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fills_in(messages: list[dict[str, Any]]) -> list[tuple[str, Decimal, str, Decimal]]:
    return [(side, Decimal(qty), sym, Decimal(price))
            for m in messages for side, qty, sym, price in FILL_LINE.findall(m["message"])]
