"""Contract tests: the Ollama client against real responses recorded from an Ollama server.

The replay server (tests/ollama_replay.py) answers with tests/fixtures/ollama_exchanges.json, taken
unchanged from the recorded exchanges in /work/shared/ollama-api/.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.deploy.conftest import RECORDED_SYSTEM
from tests.ollama_replay import load_exchanges
from trainer import go_template, ollama_client, prompt_format


def test_version_identifies_an_ollama_server(start_replay_server) -> None:
    server = start_replay_server({"GET /api/version": "version"})
    assert ollama_client.check_server(server.url) == "0.33.0-rc2"


def test_refused_connection_is_unavailable(refused_host: str) -> None:
    with pytest.raises(ollama_client.OllamaUnavailable, match=f"no Ollama at {refused_host}"):
        ollama_client.check_server(refused_host)


def test_a_proxy_in_the_environment_is_not_used_for_loopback(
    start_replay_server, refused_host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy cannot reach this machine's loopback: Ollama's own CLI never sends loopback there.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, refused_host)
    server = start_replay_server({"GET /api/version": "version"})
    assert ollama_client.answers(server.url) is True
    assert ollama_client.answers(refused_host) is False


def test_something_else_at_the_host_is_a_clear_error(start_replay_server) -> None:
    server = start_replay_server({})  # answers 404 to everything, like a web server that is not Ollama
    with pytest.raises(ollama_client.OllamaError, match="not an Ollama server") as err:
        ollama_client.check_server(server.url)
    assert not isinstance(err.value, ollama_client.OllamaUnavailable)
    assert "How to fix" in str(err.value)


def test_blob_present_is_not_uploaded_again(start_replay_server, small_file: Path) -> None:
    server = start_replay_server(
        {"HEAD /api/blobs/*": "blob_head_present", "POST /api/blobs/*": "blob_upload_existing"}
    )
    digest = ollama_client.ensure_blob(server.url, small_file)
    assert digest == "sha256:" + hashlib.sha256(small_file.read_bytes()).hexdigest()
    assert [(r.method, r.path) for r in server.requests] == [("HEAD", f"/api/blobs/{digest}")]


def test_blob_absent_is_uploaded_whole(start_replay_server, small_file: Path) -> None:
    server = start_replay_server(
        {"HEAD /api/blobs/*": "blob_head_absent", "POST /api/blobs/*": "blob_upload_new"}
    )
    digest = ollama_client.ensure_blob(server.url, small_file)
    (post,) = server.requests_to("POST", "/api/blobs/")
    assert post.path == f"/api/blobs/{digest}"
    assert post.body_bytes == small_file.stat().st_size
    assert f"sha256:{post.body_sha256}" == digest
    assert [r.method for r in server.requests] == ["HEAD", "POST"]


def test_refused_upload_names_the_server_error(start_replay_server, small_file: Path) -> None:
    server = start_replay_server(
        {"HEAD /api/blobs/*": "blob_head_absent", "POST /api/blobs/*": "blob_upload_wrong_digest"}
    )
    with pytest.raises(ollama_client.OllamaError, match=r"refused the upload.*HTTP 400.*digest mismatch"):
        ollama_client.ensure_blob(server.url, small_file)


def test_create_sends_files_template_system_parameters(start_replay_server) -> None:
    server = start_replay_server({"POST /api/create": "create"})
    fmt = prompt_format.build("chatml", RECORDED_SYSTEM)
    digest = "sha256:98a8728ebf62d419a8163c2872472ff842cba62b455638d73eb46989a161bd93"
    params = {"stop": list(fmt.stop), "num_ctx": 2048, "temperature": 0.0}
    statuses = ollama_client.create_model(
        server.url, "demo-finetuned", digest, "model.gguf", fmt.ollama_template, fmt.system, params
    )
    assert statuses[0] == "parsing GGUF" and statuses[-1] == "success"
    (request,) = server.requests
    assert request.json == {
        "model": "demo-finetuned",
        "files": {"model.gguf": digest},
        "template": fmt.ollama_template,
        "system": RECORDED_SYSTEM,
        "parameters": params,
        "stream": True,
    }


def test_create_error_is_a_clear_message(start_replay_server) -> None:
    server = start_replay_server({"POST /api/create": "create_unknown_blob"})
    with pytest.raises(ollama_client.OllamaError) as err:
        ollama_client.create_model(server.url, "bad", "sha256:" + "0" * 64, "model.gguf", None, None, {})
    message = str(err.value)
    assert "could not create model 'bad' (HTTP 500)" in message
    assert "no such file or directory" in message
    assert "How to fix" in message


def test_generate_stream_joins_text_and_reads_final_timings(start_replay_server) -> None:
    server = start_replay_server({"POST /api/generate": "generate_stream"})
    gen = ollama_client.generate(
        server.url, "demo-finetuned", "What is 2+2?", {"num_predict": 16, "temperature": 0}
    )
    assert gen.text == "2 + 2 = 4."
    assert gen.done_reason == "stop"
    assert gen.chunks == 9
    assert (gen.eval_count, gen.eval_duration_ns) == (9, 66215999)
    assert (gen.prompt_eval_count, gen.prompt_eval_duration_ns) == (64, 35196000)
    assert (gen.total_duration_ns, gen.load_duration_ns) == (106775529, 767501)
    assert gen.decode_tokens_per_s == pytest.approx(9 / 0.066215999)
    assert gen.ttft_s is not None and 0 < gen.ttft_s <= gen.wall_s
    assert server.requests[0].json == {
        "model": "demo-finetuned",
        "prompt": "What is 2+2?",
        "stream": True,
        "options": {"num_predict": 16, "temperature": 0},
    }


def test_generate_reports_length_when_num_predict_is_hit(start_replay_server) -> None:
    server = start_replay_server({"POST /api/generate": "generate_hits_num_predict"})
    gen = ollama_client.generate(server.url, "demo-finetuned", "Count from 1 to 100:", {"num_predict": 8})
    assert (gen.text, gen.done_reason, gen.eval_count) == ("1. 1\n2. ", "length", 8)


def test_generate_unknown_model_is_a_clear_message(start_replay_server) -> None:
    server = start_replay_server({"POST /api/generate": "generate_unknown_model"})
    with pytest.raises(ollama_client.OllamaError, match=r"HTTP 404\): model 'nope' not found") as err:
        ollama_client.generate(server.url, "nope", "hi")
    assert "ollama list" in str(err.value)


def test_ps_reports_cpu_memory(start_replay_server) -> None:
    server = start_replay_server({"GET /api/ps": "ps"})
    (model,) = ollama_client.ps(server.url)
    assert model["name"] == "demo-finetuned:latest"
    assert (model["size"], model["size_vram"], model["context_length"]) == (167310784, 0, 2048)
    assert model["details"]["quantization_level"] == "Q4_K_M"


def test_recorded_prompt_shows_how_ollama_composes_it(smollm2_gguf: Path) -> None:
    """Decode the token context Ollama returned: the exact text the model saw.

    The recorded model's template used both `{{ if .System }}` and `range .Messages`, and Ollama
    rendered the system prompt twice; no BOS was added in front (SmolLM2's GGUF says
    add_bos_token=false). With our .Messages template (no .System beside it) it appears once.
    """
    llama_cpp = pytest.importorskip("llama_cpp")
    exchange = load_exchanges()["generate_nostream"]
    final = json.loads(exchange["response_text"])
    vocab = llama_cpp.Llama(model_path=str(smollm2_gguf), vocab_only=True, verbose=False)
    seen = vocab.detokenize(final["context"], special=True).decode("utf-8")
    system_turn = f"<|im_start|>system\n{RECORDED_SYSTEM}<|im_end|>\n"
    user_turn = "<|im_start|>user\n请用一句话介绍北京。<|im_end|>\n<|im_start|>assistant\n"
    assert seen == system_turn * 2 + user_turn + final["response"]

    fmt = prompt_format.build("chatml", RECORDED_SYSTEM)
    ours = go_template.generate_prompt(fmt.ollama_template, fmt.system, "请用一句话介绍北京。")
    assert ours == system_turn + user_turn == fmt.prompt("请用一句话介绍北京。")
