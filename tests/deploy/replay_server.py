"""A loopback HTTP server that answers with recorded Ollama responses (fixtures/ollama_exchanges.json).

Each test routes "METHOD /path" (a trailing "*" matches any rest of the path) to a recorded
exchange name, or to a list of names served in turn (the last one repeats). The server answers with
that exchange's real status and body: NDJSON bodies go out line by line with chunked encoding, the
way Ollama streams them. It records every request it got (method, path, body size and sha256, JSON)
so tests can check what the client sent. Unrouted requests get 404 with an empty body, which is not
what Ollama sends: a test then sees its own routing mistake.

One server-side behaviour is reproduced rather than only replayed, because the client is built
around it: for `blob_upload_existing` Ollama answers at once without reading the upload.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent / "fixtures" / "ollama_exchanges.json"


def load_exchanges() -> dict[str, dict[str, Any]]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))["exchanges"]


@dataclass
class ReceivedRequest:
    method: str
    path: str
    body_bytes: int
    body_sha256: str | None
    json: Any


class ReplayServer:
    def __init__(self, routes: dict[str, str | list[str]] | None = None) -> None:
        self.exchanges = load_exchanges()
        self.routes: dict[str, list[str]] = {}
        self.served: dict[str, int] = {}
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        for key, names in (routes or {}).items():
            self.route(key, names)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

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

    def _pick(self, method: str, path: str) -> dict[str, Any] | None:
        with self._lock:
            for key, names in self.routes.items():
                m, _, pattern = key.partition(" ")
                if m != method:
                    continue
                if pattern == path or (pattern.endswith("*") and path.startswith(pattern[:-1])):
                    turn = self.served.get(key, 0)
                    self.served[key] = turn + 1
                    name = names[min(turn, len(names) - 1)]
                    return {"name": name, **self.exchanges[name]}
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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

            def _handle(self) -> None:
                exchange = server._pick(self.command, self.path)
                skip_body = exchange is not None and exchange["name"] == "blob_upload_existing"
                body = b"" if skip_body or self.command in ("GET", "HEAD") else self._read_body()
                try:
                    parsed = json.loads(body) if body else None
                except (json.JSONDecodeError, UnicodeDecodeError):
                    parsed = None
                with server._lock:
                    server.requests.append(
                        ReceivedRequest(
                            self.command,
                            self.path,
                            len(body),
                            hashlib.sha256(body).hexdigest() if body else None,
                            parsed,
                        )
                    )
                if exchange is None:
                    self._send(404, b"", "text/plain")
                    return
                if skip_body:
                    # Ollama answers and drops the connection without reading the upload.
                    self.close_connection = True
                text = exchange["response_text"]
                lines = [line for line in text.split("\n") if line.strip()]
                if len(lines) > 1:
                    self._stream(exchange["status"], lines)
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

            def _stream(self, status: int, lines: list[str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for line in lines:
                    data = (line + "\n").encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            do_GET = do_POST = do_HEAD = do_DELETE = _handle

        return Handler
