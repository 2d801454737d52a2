"""A loopback HTTP server that answers like Ollama by replaying recorded responses.

Used by the deploy tests (the Ollama client's contract) and the benchmark tests (the Ollama engine).
The answers are fixtures/ollama_exchanges.json and fixtures/ollama_determinism.json, copied
unchanged from the real exchanges in /work/shared/ollama-api/ (recorded-exchanges.json: the API;
determinism.json: templated answers whose `context` gives the prompt token ids). A test may add an
exchange derived from a recorded one (`derived=`), saying in its name what was changed.

Each test routes "METHOD /path" (a trailing "*" matches any rest of the path) to a recorded
exchange name, or to a list of names served in turn (the last one repeats); `SERVING_ROUTES` is
what the benchmark needs. The server answers with that exchange's real status and body: NDJSON
bodies go out line by line with chunked encoding and a short pause between lines, so client-side
timing sees a real stream. Unrouted requests get 404 with an empty body, which is not what Ollama
sends: a test then sees its own routing mistake. Every request is kept in `requests` (method, path,
body size and sha256, JSON) so tests can check what the client sent.

Server-side behaviour that the clients are built around is reproduced rather than only replayed:
- `blob_upload_existing`: Ollama answers at once without reading the upload;
- `model=`: a request naming another model gets Ollama's recorded "model not found" 404;
- `stall_after=`: /api/generate stalls `stall_s` after its first line once that many were served
  (a request timeout).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = [
    Path(__file__).parent / "fixtures" / "ollama_exchanges.json",
    Path(__file__).parent / "fixtures" / "ollama_determinism.json",
]
# The model the exchanges were recorded with.
MODEL = "demo-finetuned"
# What a benchmark run asks: server check, model facts, memory and streamed answers.
SERVING_ROUTES: dict[str, str | list[str]] = {
    "GET /api/version": "version",
    "GET /api/tags": "tags",
    "GET /api/ps": "ps",
    "POST /api/show": "show",
    "POST /api/generate": "generate_stream",
}


def refused_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def load_exchanges() -> dict[str, dict[str, Any]]:
    """The recorded exchanges by name."""
    exchanges: dict[str, dict[str, Any]] = {}
    for path in FIXTURES:
        data = json.loads(path.read_text(encoding="utf-8"))
        exchanges.update({exchange["name"]: exchange for exchange in data["exchanges"]})
    return exchanges


@dataclass
class ReceivedRequest:
    method: str
    path: str
    body_bytes: int
    body_sha256: str | None
    json: Any


class ReplayServer:
    """Start with `with ReplayServer(routes) as server:`; `server.url` is its base URL."""

    def __init__(
        self,
        routes: dict[str, str | list[str]] | None = None,
        *,
        model: str | None = None,
        line_delay_s: float = 0.005,
        stall_after: int | None = None,
        stall_s: float = 5.0,
        derived: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        self.exchanges = load_exchanges()
        for name, (status, text) in (derived or {}).items():
            self.add(name, status, text)
        self.routes: dict[str, list[str]] = {}
        self.served: dict[str, int] = {}
        self.requests: list[ReceivedRequest] = []
        self.model = model
        self.line_delay_s = line_delay_s
        self.stall_after = stall_after
        self.stall_s = stall_s
        self._lock = threading.Lock()
        for key, names in (routes or {}).items():
            self.route(key, names)
        self._server = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._server.replay = self
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, name: str, status: int, response_text: str) -> None:
        """An exchange derived from a recorded one (a test names what it changed)."""
        self.exchanges[name] = {"name": name, "status": status, "response_text": response_text}

    def route(self, key: str, names: str | list[str]) -> None:
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            if name not in self.exchanges:
                raise KeyError(f"no recorded exchange {name!r}")
        self.routes[key] = names

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def requests_to(self, method: str, path_prefix: str) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def _pick(self, method: str, path: str) -> tuple[dict[str, Any], int] | None:
        """The exchange routed for this request and how many were served on its route before."""
        with self._lock:
            for key, names in self.routes.items():
                m, _, pattern = key.partition(" ")
                if m != method:
                    continue
                if pattern == path or (pattern.endswith("*") and path.startswith(pattern[:-1])):
                    turn = self.served.get(key, 0)
                    self.served[key] = turn + 1
                    name = names[min(turn, len(names) - 1)]
                    return {"name": name, **self.exchanges[name]}, turn
        return None

    def _unknown_model(self, body: Any) -> str | None:
        """Ollama's 404 text when the request names a model other than `self.model`."""
        if self.model is None or not isinstance(body, dict) or "model" not in body:
            return None
        asked = str(body["model"])
        if asked in (self.model, f"{self.model}:latest"):
            return None
        recorded = json.loads(self.exchanges["generate_unknown_model"]["response_text"])
        return json.dumps({"error": recorded["error"].replace("'nope'", f"'{asked}'")})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    replay: ReplayServer


class _Handler(BaseHTTPRequestHandler):
    """Answers one connection's requests from `self.server.replay`."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    @property
    def replay(self) -> ReplayServer:
        return self.server.replay

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self, body: bytes) -> Any:
        try:
            parsed = json.loads(body) if body else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None
        digest = hashlib.sha256(body).hexdigest() if body else None
        with self.replay._lock:
            self.replay.requests.append(ReceivedRequest(self.command, self.path, len(body), digest, parsed))
        return parsed

    def _handle(self) -> None:
        picked = self.replay._pick(self.command, self.path)
        exchange, turn = picked if picked else (None, 0)
        skip_body = exchange is not None and exchange["name"] == "blob_upload_existing"
        body = b"" if skip_body or self.command in ("GET", "HEAD") else self._read_body()
        parsed = self._record(body)
        not_found = self.replay._unknown_model(parsed)
        if not_found is not None:
            self._send(404, not_found.encode(), "application/json; charset=utf-8")
            return
        if exchange is None:
            self._send(404, b"", "text/plain")
            return
        if skip_body:
            # Ollama answers and drops the connection without reading the upload.
            self.close_connection = True
        text = exchange["response_text"]
        lines = [line for line in text.split("\n") if line.strip()]
        if len(lines) > 1:
            stalls = self.path == "/api/generate" and self.replay.stall_after is not None
            self._stream(exchange["status"], lines, stalls and turn >= self.replay.stall_after)
        else:
            content_type = "application/json; charset=utf-8" if text else "text/plain"
            self._send(exchange["status"], text.encode(), content_type)

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _stream(self, status: int, lines: list[str], stall: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i, line in enumerate(lines):
                if stall and i == 1:
                    time.sleep(self.replay.stall_s)
                data = (line + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                time.sleep(self.replay.line_delay_s)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its request timeout): nothing left to answer.
            self.close_connection = True

    do_GET = do_POST = do_HEAD = do_DELETE = _handle
