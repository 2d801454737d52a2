"""Against a real Ollama server: runs only when one answers at OLLAMA_HOST (default 127.0.0.1:11434).

    OLLAMA_HOST=127.0.0.1:11434 python -m pytest tests/deploy -m ollama

Creates a uniquely named model from the embedded SmolLM2 GGUF and deletes it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.conftest import make_run_folder
from trainer import deploy, ollama_client

pytestmark = pytest.mark.ollama


@pytest.fixture(scope="module")
def live_host() -> str:
    host = ollama_client.resolve_host("")
    try:
        ollama_client.check_server(host, timeout_s=3.0)
    except ollama_client.OllamaError as exc:
        pytest.skip(f"no Ollama server answers at {host} (set OLLAMA_HOST): {exc}")
    return host


@pytest.fixture
def model_name(live_host: str) -> Iterator[str]:
    name = f"zh-ft-test-{uuid.uuid4().hex[:8]}"
    yield name
    # DELETE /api/delete; 404: the test ended before the model was created.
    with ollama_client.http_client(live_host, httpx.Timeout(60.0)) as client:
        response = client.request("DELETE", "/api/delete", json={"model": name})
    assert response.status_code in (200, 404), response.text


def test_deploy_on_a_real_server_proves_its_template(
    tmp_path: Path, smollm2_gguf: Path, smollm2_tokenizer_dir: Path, live_host: str, model_name: str
) -> None:
    cfg, run_dir = make_run_folder(tmp_path, smollm2_gguf, live_host, tokenizer_dir=smollm2_tokenizer_dir)
    cfg.deploy.model_name = model_name
    cfg.deploy.num_predict = 24
    results = deploy.run(cfg, run_dir).to_dict()
    assert results["status"] == "deployed", results
    api = results["api_test"]
    assert len(api["cases"]) == 2
    for case in api["cases"]:
        assert case["answer"].strip() and case["error"] is None
        assert case["done_reason"] in ("stop", "length")
        assert case["eval_count"] and case["decode_tokens_per_s"] > 0
        # The prompt ids Ollama used are the training prompt's, token for token.
        assert case["prompt_tokens"]["status"] == "verified", case["prompt_tokens"]
    assert api["template"]["status"] == "verified"
    assert api["template"]["matching_tokens"] == api["template"]["expected_tokens"]
    # The untuned model may ramble to the limit or answer in English: only those may fail it.
    assert set(api["failures"]) <= {"no_stop", "no_chinese"}, api["failures"]
    compared = api["llamacpp"]
    assert compared["prompt_tokens_equal"] is True, compared
    assert compared["interpretation"] in ("identical", "numeric_divergence")
    assert results["loaded"] is not None and results["loaded"]["context_length"] == 2048


def test_blob_upload_happens_once(tmp_path: Path, live_host: str) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(uuid.uuid4().bytes * 1024)
    digest = ollama_client.file_digest(blob)
    assert ollama_client.blob_exists(live_host, digest) is False
    assert ollama_client.ensure_blob(live_host, blob) == digest
    assert ollama_client.blob_exists(live_host, digest) is True
    assert ollama_client.ensure_blob(live_host, blob) == digest  # HEAD 200: no second upload


def test_real_errors_are_clear(live_host: str) -> None:
    with pytest.raises(ollama_client.OllamaError, match="could not create model"):
        ollama_client.create_model(live_host, "zh-ft-bad", "sha256:" + "0" * 64, "model.gguf", None, None, {})
    with pytest.raises(ollama_client.OllamaError, match="HTTP 404"):
        ollama_client.generate(live_host, f"zh-ft-missing-{uuid.uuid4().hex[:6]}", "hi")
