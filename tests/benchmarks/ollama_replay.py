"""A loopback HTTP server that answers like Ollama by replaying recorded responses.

The responses in fixtures/ollama_exchanges.json were recorded from a real Ollama server (copied
from shared/ollama-api/recorded-exchanges.json). Streaming /api/generate replays the recorded NDJSON
lines one by one with a short pause, so client-side timing sees a real stream. Unknown model names
get Ollama's recorded 404. Every request body is kept in `server.requests` for assertions.
`stall_after` makes /api/generate hang after that many calls (a request timeout). Binds 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent / "fixtures" / "ollama_exchanges.json"
MODEL = "demo-finetuned"


def load_exchanges() -> dict[str, dict[str, Any]]:
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return {e["name"]: e for e in data["exchanges"]}


class ReplayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, line_delay_s: float = 0.005, stall_after: int | None = None, stall_s: float = 5.0
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.exchanges = load_exchanges()
        self.line_delay_s = line_delay_s
        self.stall_after = stall_after
        self.stall_s = stall_s
        self.requests: list[tuple[str, str, Any]] = []
        self.generate_calls = 0
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def _known(name: str) -> bool:
    return name in (MODEL, f"{MODEL}:latest")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # close after each response: the body ends at EOF
    server: ReplayServer

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, text: str, content_type: str = "application/json") -> None:
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _replay(self, name: str) -> None:
        ex = self.server.exchanges[name]
        self._send(ex["status"], ex["response_text"])

    def _not_found(self, model: str) -> None:
        recorded = json.loads(self.server.exchanges["generate_unknown_model"]["response_text"])
        self._send(404, json.dumps({"error": recorded["error"].replace("'nope'", f"'{model}'")}))

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, None))
        routes = {"/api/version": "version", "/api/tags": "tags", "/api/ps": "ps"}
        if self.path in routes:
            self._replay(routes[self.path])
        else:
            self._send(404, "404 page not found", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append(("POST", self.path, body))
        model = body.get("model", "")
        if self.path == "/api/show":
            self._replay("show") if _known(model) else self._not_found(model)
        elif self.path == "/api/generate":
            if not _known(model):
                self._not_found(model)
                return
            with self.server.lock:
                self.server.generate_calls += 1
                calls = self.server.generate_calls
            if not body.get("stream", True):
                self._replay("generate_nostream")
                return
            lines = self.server.exchanges["generate_stream"]["response_text"].strip().split("\n")
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            stall = self.server.stall_after is not None and calls > self.server.stall_after
            for i, line in enumerate(lines):
                if stall and i == 1:
                    time.sleep(self.server.stall_s)
                try:
                    self.wfile.write(line.encode("utf-8") + b"\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                time.sleep(self.server.line_delay_s)
        else:
            self._send(404, "404 page not found", "text/plain")
