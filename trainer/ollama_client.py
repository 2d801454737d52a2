"""The one Ollama REST client: `python run.py deploy`, the evaluation judge and the benchmark's
Ollama engine (`benchmarks/engines/ollama.py`) all talk to Ollama through it.

Reads nothing from the run folder and writes nothing; it talks to the server at `host`
(`resolve_host`: deploy.host / --host, else OLLAMA_HOST, else http://127.0.0.1:11434). Every
connection comes from `http_client`, which never sends a loopback host through a proxy from the
environment (the ollama CLI's rule). The official `ollama` package does model creation, listing of
loaded models and deletion; httpx does the rest directly: the blob upload (the official
`create_blob` POSTs without asking first, and a POST to a blob the server already has is answered
200 without the body being read, which breaks a large upload's pipe: see tests/fixtures) and
streamed generation (client-side time to first token).

Every failure is an `OllamaError` (a UserError: message and fix, no traceback); nothing answering at
the host is its subclass `OllamaUnavailable`, which the deploy stage may turn into "not deployed".
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from trainer.errors import UserError

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434
_CHUNK_BYTES = 1 << 20


class OllamaError(UserError):
    """Ollama answered with an error, or something at the host is not Ollama."""


class OllamaUnavailable(OllamaError):
    """Nothing answered at the host (connection refused, unknown name, timeout)."""


# ---------------------------------------------------------------------------------------------
# Host


def normalize_host(text: str) -> str:
    """A base URL from an OLLAMA_HOST-style value, read as Ollama's envconfig.Host() reads it
    (scheme, default ports), except that a bind-all address becomes loopback.

    "127.0.0.1:11434" -> http://127.0.0.1:11434, "0.0.0.0" -> http://127.0.0.1:11434,
    "https://h" -> https://h:443, "http://h" -> http://h:80, "[::1]" -> http://[::1]:11434.
    """
    value = text.strip().strip("\"'")
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest, default_port = "http", value, DEFAULT_PORT
    elif scheme in ("http", "https"):
        default_port = 80 if scheme == "http" else 443
    else:
        raise UserError(f"Ollama host {text!r} has scheme {scheme!r}.", fix="use http:// or https://")
    hostport, _, path = rest.partition("/")
    host, port = hostport, default_port
    if hostport.startswith("["):  # [IPv6] or [IPv6]:port
        end = hostport.find("]")
        host, tail = hostport[1:end], hostport[end + 1 :]
        if tail.startswith(":") and tail[1:]:
            port = _port(tail[1:], text)
    elif hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
        port = _port(port_text, text) if port_text else default_port
    elif hostport.count(":") > 1:  # a bare IPv6 address
        host = hostport
    # 0.0.0.0 / :: in OLLAMA_HOST is the server's bind-all address; a client reaches that server on
    # loopback (connecting to 0.0.0.0 works on Linux only).
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    url = f"{scheme}://{host}:{port}"
    return f"{url}/{path.rstrip('/')}" if path.strip("/") else url


def _port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UserError(f"Ollama host {original!r} has a bad port {text!r}.", fix="use e.g. 127.0.0.1:11434")
    return int(text)


def resolve_host(configured: str | None = "") -> str:
    """deploy.host / --host when set, else $OLLAMA_HOST, else http://127.0.0.1:11434 (normalised)."""
    value = (configured or "").strip() or os.environ.get("OLLAMA_HOST", "").strip()
    return normalize_host(value) if value else DEFAULT_HOST


def _is_loopback(host: str) -> bool:
    name = urlsplit(host).hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def same_model(a: str, b: str) -> bool:
    """True when two Ollama model names are the same model ("name" means "name:latest")."""

    def full(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    return full(a) == full(b)


def http_client(host: str, timeout: httpx.Timeout, limits: httpx.Limits | None = None) -> httpx.Client:
    """An httpx client for `host`. Like Go's http.ProxyFromEnvironment (what the ollama CLI uses), a
    loopback host never goes through HTTP(S)_PROXY: a proxy cannot reach the caller's own loopback."""
    extra = {"limits": limits} if limits is not None else {}
    return httpx.Client(base_url=host, timeout=timeout, trust_env=not _is_loopback(host), **extra)


def _http(host: str, timeout_s: float) -> httpx.Client:
    return http_client(host, httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)))


def _unavailable(host: str, exc: Exception) -> OllamaUnavailable:
    return OllamaUnavailable(
        f"no Ollama at {host} ({type(exc).__name__}: {exc}).",
        fix="start it with `ollama serve`, or point deploy.host / OLLAMA_HOST at the server",
    )


def error_text(response: httpx.Response) -> str:
    """The `error` of an Ollama error answer, else the start of its body ("" when unreadable)."""
    try:
        body = response.read().decode("utf-8", "replace")
    except httpx.HTTPError:
        return ""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return body.strip()[:500]
    return str(data.get("error", body)) if isinstance(data, dict) else body.strip()[:500]


# ---------------------------------------------------------------------------------------------
# Server and blobs


def check_server(host: str, timeout_s: float = 10.0) -> str:
    """The server's version (GET /api/version). OllamaUnavailable when nothing answers."""
    try:
        with _http(host, timeout_s) as client:
            response = client.get("/api/version")
    except (httpx.ConnectError, httpx.TimeoutException) as exc:
        raise _unavailable(host, exc) from None
    except httpx.HTTPError as exc:
        raise OllamaError(f"{host} did not answer like an Ollama server ({exc}).") from None
    try:
        version = response.json().get("version") if response.status_code == 200 else None
    except (json.JSONDecodeError, AttributeError):
        version = None
    if not isinstance(version, str):
        raise OllamaError(
            f"{host} answered GET /api/version with HTTP {response.status_code} but is not an Ollama server.",
            fix="check deploy.host / OLLAMA_HOST (Ollama listens on port 11434 by default)",
        )
    return version


def answers(host: str, timeout_s: float = 2.0) -> bool:
    """True when an Ollama server answers at `host` (check_server without the error)."""
    try:
        check_server(host, timeout_s=timeout_s)
    except OllamaError:
        return False
    return True


def file_digest(path: Path) -> str:
    """The blob name Ollama stores a file under: sha256:<hex>."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


def blob_exists(host: str, digest: str, timeout_s: float = 30.0) -> bool:
    """HEAD /api/blobs/<digest>: 200 present, 404 absent."""
    try:
        with _http(host, timeout_s) as client:
            response = client.head(f"/api/blobs/{digest}")
    except (httpx.ConnectError, httpx.TimeoutException) as exc:
        raise _unavailable(host, exc) from None
    if response.status_code in (200, 404):
        return response.status_code == 200
    raise OllamaError(f"Ollama at {host} answered HEAD /api/blobs/{digest} with HTTP {response.status_code}.")


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            yield chunk


def ensure_blob(
    host: str, path: Path, timeout_s: float = 600.0, log: Callable[[str], None] | None = None
) -> str:
    """Put a file on the server as a blob unless it is already there; return its digest.

    HEAD first: Ollama answers a POST for a blob it already has at once, without reading the body,
    so a large upload would die on a broken pipe.
    """
    path = Path(path)
    digest = file_digest(path)
    if blob_exists(host, digest, timeout_s=min(timeout_s, 30.0)):
        if log:
            log(f"blob {digest} already on the server; upload skipped")
        return digest
    size = path.stat().st_size
    if log:
        log(f"uploading {path.name} ({size} bytes) as blob {digest}")
    try:
        with _http(host, timeout_s) as client:
            # A known Content-Length instead of chunked encoding: simpler for every server.
            response = client.post(
                f"/api/blobs/{digest}",
                content=_file_chunks(path),
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            )
    except httpx.ConnectError as exc:
        raise _unavailable(host, exc) from None
    except httpx.HTTPError as exc:
        raise OllamaError(
            f"uploading {path} to Ollama at {host} failed: {type(exc).__name__}: {exc}.",
            fix="check the server's free disk space and log, then rerun `python run.py deploy`",
        ) from None
    if response.status_code not in (200, 201):
        raise OllamaError(
            f"Ollama at {host} refused the upload of {path.name} as {digest} "
            f"(HTTP {response.status_code}: {error_text(response)}).",
            fix="rerun `python run.py export` if the GGUF changed while uploading, then deploy again",
        )
    return digest


# ---------------------------------------------------------------------------------------------
# Models


def _official(host: str, timeout_s: float) -> Any:
    import ollama

    return ollama.Client(host=host, timeout=timeout_s, trust_env=not _is_loopback(host))


def create_model(
    host: str,
    name: str,
    digest: str,
    gguf_name: str,
    template: str | None,
    system: str | None,
    parameters: dict[str, Any],
    timeout_s: float = 600.0,
    log: Callable[[str], None] | None = None,
) -> list[str]:
    """POST /api/create from an uploaded GGUF blob; returns the progress statuses (last: "success")."""
    import ollama

    statuses: list[str] = []
    try:
        with _official(host, timeout_s) as client:
            for part in client.create(
                model=name,
                files={gguf_name: digest},
                template=template,
                system=system,
                parameters=parameters or None,
                stream=True,
            ):
                status = part.status or ""
                statuses.append(status)
                if log:
                    log(f"create {name}: {status}")
    except ollama.ResponseError as exc:
        where = f"HTTP {exc.status_code}" if exc.status_code > 0 else "in its progress stream"
        raise OllamaError(
            f"Ollama at {host} could not create model '{name}' ({where}): {exc.error}",
            fix="if it names a missing blob, the upload went elsewhere or failed: rerun `python run.py deploy`",
        ) from None
    except (ConnectionError, httpx.ConnectError, httpx.TimeoutException) as exc:
        raise _unavailable(host, exc) from None
    except httpx.HTTPError as exc:
        raise OllamaError(f"creating model '{name}' at {host} failed: {type(exc).__name__}: {exc}.") from None
    if not statuses or statuses[-1] != "success":
        raise OllamaError(
            f"Ollama at {host} ended the creation of model '{name}' without success "
            f"(last status: {statuses[-1] if statuses else 'none'})."
        )
    return statuses


class GenerationFailed(OllamaError):
    """A /api/generate request that started but failed: HTTP error, an error line, a stream cut
    short without its final object, a time-out. `text` is what had arrived before."""

    def __init__(self, message: str, text: str = "", fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.text = text


@dataclass
class Generation:
    """One /api/generate call: the text, why it stopped, and the server's own timings (ns)."""

    text: str
    done_reason: str | None
    total_duration_ns: int | None
    load_duration_ns: int | None
    prompt_eval_count: int | None
    prompt_eval_duration_ns: int | None
    eval_count: int | None
    eval_duration_ns: int | None
    # Client-side: first non-empty piece of text, and the whole request (seconds).
    ttft_s: float | None
    wall_s: float
    chunks: int
    # The final object's `context`: the token ids of the rendered prompt (its first
    # prompt_eval_count entries) followed by the answer's; None when the server sent none.
    context: list[int] | None = None

    @property
    def prompt_ids(self) -> list[int] | None:
        """The token ids Ollama fed the model for the prompt (from `context`), or None."""
        if self.context is None or self.prompt_eval_count is None:
            return None
        return self.context[: self.prompt_eval_count]

    @property
    def decode_tokens_per_s(self) -> float | None:
        if not self.eval_count or not self.eval_duration_ns:
            return None
        return self.eval_count / self.eval_duration_ns * 1e9

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decode_tokens_per_s": self.decode_tokens_per_s}


def generate(
    host: str,
    model: str,
    prompt: str,
    options: dict[str, Any] | None = None,
    stream: bool = True,
    timeout_s: float = 300.0,
) -> Generation:
    """POST /api/generate (the model's TEMPLATE and SYSTEM apply); streamed NDJSON is joined.

    Raises OllamaUnavailable when nothing answers, GenerationFailed (with the text received so far)
    when the request fails once started."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": stream}
    if options:
        body["options"] = options
    pieces: list[str] = []
    final: dict[str, Any] = {}
    ttft_s: float | None = None
    chunks = 0
    t0 = time.perf_counter()

    def failed(message: str, fix: str | None = None) -> GenerationFailed:
        return GenerationFailed(message, "".join(pieces), fix=fix)

    try:
        with _http(host, timeout_s) as client, client.stream("POST", "/api/generate", json=body) as response:
            if response.status_code != 200:
                text = error_text(response)
                fix = (
                    "create it first (`python run.py deploy`) or check the name with `ollama list`"
                    if response.status_code == 404
                    else None
                )
                raise failed(
                    f"Ollama at {host} refused to generate with '{model}' (HTTP {response.status_code}): {text}",
                    fix=fix,
                )
            for line in response.iter_lines():
                if not line.strip():
                    continue
                part = json.loads(line)
                if part.get("error"):
                    raise failed(f"Ollama at {host} failed while generating with '{model}': {part['error']}")
                chunks += 1
                piece = part.get("response", "")
                if piece and ttft_s is None:
                    ttft_s = time.perf_counter() - t0
                pieces.append(piece)
                if part.get("done"):
                    final = part
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise _unavailable(host, exc) from None
    except httpx.HTTPError as exc:
        raise failed(f"generating with '{model}' at {host} failed: {type(exc).__name__}: {exc}.") from None
    except json.JSONDecodeError as exc:
        raise failed(f"Ollama at {host} sent a line that is not JSON ({exc}).") from None
    wall_s = time.perf_counter() - t0
    if not final:
        raise failed(f"Ollama at {host} ended the answer of '{model}' without a final (done) object.")
    context = final.get("context")
    return Generation(
        text="".join(pieces),
        done_reason=final.get("done_reason"),
        total_duration_ns=final.get("total_duration"),
        load_duration_ns=final.get("load_duration"),
        prompt_eval_count=final.get("prompt_eval_count"),
        prompt_eval_duration_ns=final.get("prompt_eval_duration"),
        eval_count=final.get("eval_count"),
        eval_duration_ns=final.get("eval_duration"),
        ttft_s=ttft_s,
        wall_s=wall_s,
        chunks=chunks,
        context=[int(t) for t in context] if isinstance(context, list) else None,
    )


def ps(host: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Loaded models (GET /api/ps): name, size, size_vram (0 on CPU), context_length, details."""
    import ollama

    try:
        with _official(host, timeout_s) as client:
            response = client.ps()
    except ollama.ResponseError as exc:
        raise OllamaError(f"Ollama at {host} refused GET /api/ps: {exc.error}") from None
    except (ConnectionError, httpx.ConnectError, httpx.TimeoutException) as exc:
        raise _unavailable(host, exc) from None
    return [m.model_dump(mode="json") for m in response.models]
