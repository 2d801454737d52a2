"""One streamed HTTP request, timed on the client: the loop the Ollama and llama.cpp engines share.

POSTs a JSON body and reads the answer line by line, NDJSON (Ollama) or server-sent events
(`data: {...}`, llama.cpp), stamping each arrival with time.perf_counter(). A line with text is a
chunk (first_token_s, chunk_times_s, text); the engine says which object is the last one. Never
raises: an HTTP error status, an error object in the stream, a request timeout (no data for
`timeout_s`, or `timeout_s` passed in all, also while queued), a broken connection or bad JSON end
the request with `RawResult.error`. Reads and writes nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.spec import RawResult, RequestSpec

SSE_DONE = "[DONE]"


@dataclass
class StreamFormat:
    sse: bool  # `data: {...}` lines (llama.cpp) rather than one JSON object a line (Ollama)
    text_of: Callable[[dict[str, Any]], str | None]  # the generated text a chunk carries
    is_final: Callable[[dict[str, Any]], bool]  # the object that ends the answer
    error_of: Callable[[dict[str, Any]], str | None] = lambda obj: None  # an error object mid-stream
    # After the final object the server still sends `data: [DONE]` (OpenAI style): read on to it,
    # so the connection stays usable for the next request.
    done_marker: bool = False


def stream_request(
    client: httpx.Client,
    path: str,
    body: dict[str, Any],
    req: RequestSpec,
    fmt: StreamFormat,
    http_error: Callable[[httpx.Response], str] = lambda r: r.text.strip()[:300],
) -> tuple[RawResult, dict[str, Any] | None, dict[str, Any] | None]:
    """(result, the final object or None, the first object with text or None)."""
    start = time.perf_counter()
    result = RawResult(ok=False, start_s=start, end_s=start)
    deadline = start + req.timeout_s
    pieces: list[str] = []
    final: dict[str, Any] | None = None
    first: dict[str, Any] | None = None
    try:
        with client.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                response.read()
                result.error = f"HTTP {response.status_code}: {http_error(response)}"
                return result, None, None
            for line in response.iter_lines():
                now = time.perf_counter()
                if now > deadline:  # also while queued: servers send pings or nothing meanwhile
                    result.error = f"request timed out after {req.timeout_s:g} s (request timeout)"
                    return result, None, first
                if fmt.sse:
                    if not line.startswith("data:"):
                        continue
                    line = line[len("data:") :].strip()
                    if line == SSE_DONE:
                        break
                if not line.strip():
                    continue
                obj = json.loads(line)
                error = fmt.error_of(obj)
                if error:
                    result.error = error
                    return result, None, first
                text = fmt.text_of(obj)
                if text:
                    if first is None:
                        first = obj
                        result.first_token_s = now
                    result.chunk_times_s.append(now)
                    pieces.append(text)
                if fmt.is_final(obj):
                    final = obj
                    if not fmt.done_marker:
                        break
    except httpx.TimeoutException:
        result.error = f"request timed out: no data for {req.timeout_s:g} s (request timeout)"
        return result, None, first
    except (httpx.HTTPError, json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result, None, first
    finally:
        result.end_s = time.perf_counter()
        result.text = "".join(pieces)
    if final is None:
        result.error = "the stream ended without its final object: was the server stopped?"
    return result, final, first
