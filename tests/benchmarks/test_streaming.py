"""The shared streamed-request loop on canned responses (httpx's MockTransport: no server)."""

from __future__ import annotations

import httpx
import pytest

from benchmarks.engines.llamacpp import NATIVE_STREAM, OPENAI_STREAM
from benchmarks.engines.ollama import OLLAMA_STREAM
from benchmarks.engines.streaming import stream_request
from benchmarks.spec import RequestSpec

REQ = RequestSpec(
    number=1, phase="measured", prompt_id="p1", question="q", text="t", tag="x#1", max_tokens=4,
    timeout_s=30.0, seed=42,
)  # fmt: skip


def client_for(status: int, body: str) -> httpx.Client:
    return httpx.Client(
        base_url="http://test",
        transport=httpx.MockTransport(lambda request: httpx.Response(status, text=body)),
    )


def test_openai_sse_reads_on_to_done_and_keeps_the_finish_chunk() -> None:
    body = (
        'data: {"choices": [{"text": "你", "finish_reason": null}]}\n\n'
        ": ping\n\n"
        'data: {"choices": [{"text": "好", "finish_reason": "length"}]}\n\n'
        "data: [DONE]\n\n"
    )
    result, final, first = stream_request(client_for(200, body), "/v1/completions", {}, REQ, OPENAI_STREAM)
    assert result.error is None and result.text == "你好" and len(result.chunk_times_s) == 2
    assert final["choices"][0]["finish_reason"] == "length" and first["choices"][0]["text"] == "你"
    assert result.start_s <= result.first_token_s <= result.end_s


def test_native_sse_final_chunk_and_mid_stream_error() -> None:
    ok = 'data: {"content": "长", "tokens_predicted": 3, "stop": false}\n\ndata: {"content": "", "stop": true}\n\n'
    result, final, first = stream_request(client_for(200, ok), "/completion", {}, REQ, NATIVE_STREAM)
    assert result.error is None and final["stop"] is True and first["tokens_predicted"] == 3
    bad = 'data: {"content": "长", "stop": false}\n\ndata: {"error": {"code": 500, "message": "boom"}}\n\n'
    result, final, _ = stream_request(client_for(200, bad), "/completion", {}, REQ, NATIVE_STREAM)
    assert final is None and result.error.startswith("server error:") and "boom" in result.error


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, '{"error": "model not found"}', "HTTP 404"),
        (200, '{"response": "a", "done": false}\n', "ended without its final object"),
        (200, '{"response": "a", "done": false}\nnot json\n', "JSONDecodeError"),
        (200, '{"error": "out of memory"}\n', "Ollama error mid-stream: out of memory"),
    ],
)
def test_failures_are_results_not_exceptions(status: int, body: str, message: str) -> None:
    result, final, _ = stream_request(client_for(status, body), "/api/generate", {}, REQ, OLLAMA_STREAM)
    assert final is None and result.ok is False and message in result.error
    assert result.end_s >= result.start_s
