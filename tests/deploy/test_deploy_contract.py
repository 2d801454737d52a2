"""The deploy stage end to end against the replay server (recorded Ollama answers) and a refused port.

The run folder is what export leaves (conftest.make_run_folder) with the embedded SmolLM2 GGUF, so
the llama.cpp comparison really runs. The replayed answers were recorded from a model whose
template rendered the system prompt twice: llama.cpp, asked in the training format, answers
differently, and the stage must say so.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from stages import by_name
from tests.deploy.conftest import make_run_folder
from tests.result_checks import assert_typed_round_trip
from trainer import deploy, pipeline
from trainer.errors import UserError
from trainer.modelfile import read_modelfile
from trainer.results import DeployResult, LoadedModel

DEPLOY_ROUTES = {
    "GET /api/version": "version",
    "HEAD /api/blobs/*": "blob_head_absent",
    "POST /api/blobs/*": "blob_upload_new",
    "POST /api/create": "create",
    # In the order of data/test.jsonl: the Chinese prompt, then "What is 2+2?".
    "POST /api/generate": ["generate_nostream", "generate_stream"],
    "GET /api/ps": "ps",
}


def test_no_server_records_not_deployed_with_the_command(
    tmp_path: Path, smollm2_gguf: Path, refused_host: str
) -> None:
    cfg, run_dir = make_run_folder(tmp_path, smollm2_gguf, refused_host)
    results = deploy.run(cfg, run_dir).to_dict()
    assert results["status"] == "not_deployed"
    assert results["reason"] == f"no Ollama at {refused_host}"
    assert (
        results["deploy_command"]
        == f"cd {tmp_path / 'models/gguf'} && ollama create demo-finetuned -f Modelfile"
    )
    assert results["api_test"] == {
        "status": "not_run",
        "reason": f"no Ollama at {refused_host}",
        "cases": [],
        "matches_llamacpp": None,
    }
    assert results["deploy_command"] in results["headline"]


def test_no_server_is_an_error_when_required(tmp_path: Path, smollm2_gguf: Path, refused_host: str) -> None:
    cfg, run_dir = make_run_folder(tmp_path, smollm2_gguf, refused_host)
    cfg.deploy.required = True
    with pytest.raises(UserError, match=f"no Ollama at {refused_host}") as err:
        deploy.run(cfg, run_dir)
    assert "ollama create demo-finetuned -f Modelfile" in str(err.value)


def test_deploy_creates_the_model_and_detects_a_template_mismatch(
    tmp_path: Path, smollm2_gguf: Path, smollm2_tokenizer_dir: Path, start_replay_server
) -> None:
    server = start_replay_server(DEPLOY_ROUTES)
    cfg, run_dir = make_run_folder(tmp_path, smollm2_gguf, server.url, tokenizer_dir=smollm2_tokenizer_dir)
    results = deploy.run(cfg, run_dir).to_dict()

    assert results["status"] == "deployed"
    assert results["ollama_version"] == "0.33.0-rc2"
    digest = "sha256:" + hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    assert results["blob"] == digest
    (upload,) = server.requests_to("POST", "/api/blobs/")
    assert upload.path == f"/api/blobs/{digest}" and upload.body_bytes == smollm2_gguf.stat().st_size

    # /api/create gets exactly what `ollama create -f Modelfile` would read.
    spec = read_modelfile(run_dir / "models/gguf/Modelfile")
    (create,) = server.requests_to("POST", "/api/create")
    assert create.json["files"] == {smollm2_gguf.name: digest}
    assert (create.json["template"], create.json["system"]) == (spec.template, spec.system)
    assert create.json["parameters"] == spec.parameters

    # The raw instruction goes out as the prompt; the model's TEMPLATE/SYSTEM do the rest.
    generates = server.requests_to("POST", "/api/generate")
    assert [g.json["prompt"] for g in generates] == ["请用一句话介绍北京。", "What is 2+2?"]
    options = generates[0].json["options"]
    assert (options["temperature"], options["num_predict"], options["num_ctx"]) == (0.0, 48, 2048)

    api = results["api_test"]
    first, second = api["cases"]
    assert first["answer"] == "北京是一个美丽的美派，是一种美丽的美丽，是一种美丽的美"
    assert (first["done_reason"], first["observations"]) == ("length", ["at_limit"])
    assert first["eval_count"] == 48
    assert first["decode_tokens_per_s"] == pytest.approx(48 / 0.385582)
    assert (second["answer"], second["done_reason"]) == ("2 + 2 = 4.", "stop")
    assert second["observations"] == ["no_chinese"]

    # The recorded server's TEMPLATE rendered the system block twice: its prompt ids part from the
    # training prompt's where the second block starts (<|im_start|> "system" vs "user").
    tokens = first["prompt_tokens"]
    assert tokens["status"] == "failed" and tokens["first_difference"] == 25
    assert (tokens["expected_tokens"], tokens["ollama_tokens"]) == (50, 74)
    assert "<|im_start|>user" in tokens["expected_around"]
    assert "<|im_start|>system" in tokens["ollama_around"]
    assert api["template"]["status"] == "failed" and api["template"]["case"] == 1
    assert api["failures"] == ["template_mismatch"] and api["status"] == "failed"
    assert api["stops"]["status"] == "passed"

    compared = api["llamacpp"]
    assert compared["prompt"] == (
        "<|im_start|>system\n你是一个乐于助人的中文助手。<|im_end|>\n"
        "<|im_start|>user\n请用一句话介绍北京。<|im_end|>\n<|im_start|>assistant\n"
    )
    assert compared["ollama_answer"] == first["answer"]
    assert compared["llamacpp_answer"]  # llama.cpp really generated on the GGUF
    assert compared["prompt_tokens_equal"] is False and compared["interpretation"] == "prompt_differs"
    assert api["matches_llamacpp"] is False
    assert results["loaded"] == {
        "size_bytes": 167310784,
        "size_vram_bytes": 0,
        "context_length": 2048,
        "quantization": "Q4_K_M",
    }
    assert "template MISMATCH in case 1" in results["headline"]


def test_without_the_exported_tokenizer_the_template_is_not_checked(
    tmp_path: Path, smollm2_gguf: Path, start_replay_server
) -> None:
    server = start_replay_server(DEPLOY_ROUTES)
    cfg, run_dir = make_run_folder(tmp_path, smollm2_gguf, server.url)
    api = deploy.run(cfg, run_dir).to_dict()["api_test"]
    assert api["template"]["status"] == "not_checked"
    assert api["template"]["reason"].startswith("no_tokenizer")
    assert api["status"] == "inconclusive" and api["failures"] == []


def test_a_deployed_result_round_trips_with_every_key_named(
    tmp_path: Path, smollm2_gguf: Path, start_replay_server
) -> None:
    server = start_replay_server(DEPLOY_ROUTES)
    cfg, run_dir = make_run_folder(tmp_path, smollm2_gguf, server.url)
    pipeline.run_stage(by_name("deploy"), cfg, run_dir)
    typed = assert_typed_round_trip(run_dir, "deploy")
    assert isinstance(typed, DeployResult) and typed.status == "deployed"
    assert isinstance(typed.loaded, LoadedModel) and typed.loaded.context_length == 2048
    assert typed.api_test.llamacpp.llamacpp_answer  # llama.cpp really answered


def test_blob_already_on_the_server_is_not_sent(
    tmp_path: Path, smollm2_gguf: Path, start_replay_server
) -> None:
    server = start_replay_server(
        {
            **DEPLOY_ROUTES,
            "HEAD /api/blobs/*": "blob_head_present",
            "POST /api/blobs/*": "blob_upload_existing",
        }
    )
    cfg, run_dir = make_run_folder(tmp_path, smollm2_gguf, server.url)
    cfg.deploy.test_prompts = 0
    results = deploy.run(cfg, run_dir).to_dict()
    assert results["status"] == "deployed"
    assert server.requests_to("POST", "/api/blobs/") == []
    assert any("upload skipped" in note for note in results["notes"])
    assert results["api_test"]["status"] == "not_run"


def test_refused_upload_is_a_failed_deployment(
    tmp_path: Path, smollm2_gguf: Path, start_replay_server
) -> None:
    server = start_replay_server({**DEPLOY_ROUTES, "POST /api/blobs/*": "blob_upload_wrong_digest"})
    cfg, run_dir = make_run_folder(tmp_path, smollm2_gguf, server.url)
    results = deploy.run(cfg, run_dir).to_dict()
    assert results["status"] == "failed"
    assert "refused the upload" in results["reason"] and "digest mismatch" in results["reason"]
    assert server.requests_to("POST", "/api/create") == []


def test_wrong_host_is_a_clear_error(tmp_path: Path, smollm2_gguf: Path, start_replay_server) -> None:
    server = start_replay_server({})  # something answers, but not Ollama
    cfg, run_dir = make_run_folder(tmp_path, smollm2_gguf, server.url)
    with pytest.raises(UserError, match="not an Ollama server"):
        deploy.run(cfg, run_dir)


def test_edited_template_is_refused(tmp_path: Path, smollm2_gguf: Path, start_replay_server) -> None:
    server = start_replay_server(DEPLOY_ROUTES)
    cfg, run_dir = make_run_folder(tmp_path, smollm2_gguf, server.url)
    modelfile = run_dir / "models/gguf/Modelfile"
    modelfile.write_text(
        modelfile.read_text(encoding="utf-8").replace("<|im_start|>user", "<|im_start|>human")
    )
    with pytest.raises(UserError, match="TEMPLATE differs"):
        deploy.run(cfg, run_dir)
    assert server.requests_to("POST", "/api/create") == []


def test_missing_export_is_a_clear_error(tmp_path: Path, smollm2_gguf: Path, refused_host: str) -> None:
    cfg, run_dir = make_run_folder(tmp_path, smollm2_gguf, refused_host)
    run_dir.stage_file("export").unlink()
    with pytest.raises(UserError, match=re.escape("run `python run.py export` first")):
        deploy.run(cfg, run_dir)
