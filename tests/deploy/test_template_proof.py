"""The deploy verdicts against recorded Ollama answers: the template proof by prompt token ids, the
set-level stop check, and failed requests that are recorded instead of ending the stage.

The fixtures are ../shared/ollama-api/ (tests/fixtures/): determinism.json holds the default run's
model (xiaozhi-smollm2, ChatML) answering one test question, with `context` = the prompt token ids
Ollama used; recorded-exchanges.json holds a model whose TEMPLATE rendered the system prompt twice.
Exchanges derived from them say in their names what was changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stages import by_name
from tests.deploy.conftest import DETERMINISM_RECORD, DETERMINISM_SYSTEM, make_run_folder, read_json
from tests.ollama_replay import load_exchanges
from trainer import deploy, go_template, pipeline, prompt_format
from trainer.errors import UserError
from trainer.models import load_tokenizer

DEPLOY = {
    "GET /api/version": "version",
    "HEAD /api/blobs/*": "blob_head_absent",
    "POST /api/blobs/*": "blob_upload_new",
    "POST /api/create": "create",
    "GET /api/ps": "ps",
}
# The system block of the ChatML prompt in the recorded context: <|im_start|>system\n…<|im_end|>\n
SYSTEM_BLOCK_TOKENS = 25


def _answer(name: str) -> dict[str, Any]:
    return json.loads(load_exchanges()[name]["response_text"])


def _derived(name: str, **changes: Any) -> tuple[int, str]:
    return 200, json.dumps({**_answer(name), **changes}, ensure_ascii=False)


def _warm_ended_by_stop() -> tuple[int, str]:
    """The recorded warm answer as if the model had then emitted its end marker (done_reason stop)."""
    return _derived("generate_templated_warm", done_reason="stop")


def _without_system_block() -> tuple[int, str]:
    """What Ollama answers when its TEMPLATE lacks the system block: the recorded context with that
    block's tokens removed (test_the_derived_fixture_is_what_such_a_template_renders proves it)."""
    recorded = _answer("generate_templated_first_after_load")
    return _derived(
        "generate_templated_first_after_load",
        context=recorded["context"][SYSTEM_BLOCK_TOKENS:],
        prompt_eval_count=recorded["prompt_eval_count"] - SYSTEM_BLOCK_TOKENS,
    )


def _default_run(tmp_path: Path, gguf: Path, tokenizer_dir: Path, url: str, cases: int = 2):
    records = [{**DETERMINISM_RECORD, "id": f"test-{n}"} for n in range(1, cases + 1)]
    cfg, run_dir = make_run_folder(
        tmp_path, gguf, url, system=DETERMINISM_SYSTEM, records=records, tokenizer_dir=tokenizer_dir
    )
    cfg.deploy.num_predict = 24  # as recorded
    return cfg, run_dir


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_dir: Path) -> Any:
    return load_tokenizer(str(smollm2_tokenizer_dir))


@pytest.mark.parametrize(
    "name", ["generate_templated_first_after_load", "generate_templated_warm", "generate_templated_2_threads"]
)
def test_recorded_prompt_tokens_equal_the_training_prompt(tokenizer: Any, name: str) -> None:
    fmt = prompt_format.build("chatml", DETERMINISM_SYSTEM)
    answer = _answer(name)
    expected = tokenizer(fmt.prompt(DETERMINISM_RECORD["instruction"], DETERMINISM_RECORD["input"]))[
        "input_ids"
    ]
    assert answer["context"][: answer["prompt_eval_count"]] == expected
    assert len(expected) == 135


def test_the_messages_template_asks_what_the_recorded_server_asked(tokenizer: Any) -> None:
    """The new .Messages TEMPLATE, rendered as Ollama renders /api/generate, gives the recorded ids."""
    fmt = prompt_format.build("chatml", DETERMINISM_SYSTEM)
    request = load_exchanges()["generate_templated_first_after_load"]["request"]["json"]
    text = go_template.generate_prompt(fmt.ollama_template, fmt.system, request["prompt"])
    answer = _answer("generate_templated_first_after_load")
    assert tokenizer(text)["input_ids"] == answer["context"][: answer["prompt_eval_count"]]


@pytest.mark.parametrize("name", ["generate_nostream", "generate_stream", "generate_hits_num_predict"])
def test_the_renderer_reproduces_a_real_servers_double_system_prompt(tokenizer: Any, name: str) -> None:
    """The recorded model's TEMPLATE used .System and .Messages: Ollama rendered the system prompt
    twice, and so does trainer/go_template.py, token for token."""
    exchanges = load_exchanges()
    create = exchanges["create"]["request"]["json"]
    request = exchanges[name]["request"]["json"]
    lines = [json.loads(x) for x in exchanges[name]["response_text"].splitlines() if x.strip()]
    final = lines[-1]
    text = go_template.generate_prompt(create["template"], create["system"], request["prompt"])
    assert tokenizer(text)["input_ids"] == final["context"][: final["prompt_eval_count"]]


def test_the_derived_fixture_is_what_such_a_template_renders(tokenizer: Any) -> None:
    fmt = prompt_format.build("chatml", DETERMINISM_SYSTEM)
    no_system = fmt.ollama_template.replace(
        '{{- if eq $m.Role "system" }}<|im_start|>system\n{{ $m.Content }}<|im_end|>\n{{ else if',
        '{{- if eq $m.Role "system" }}{{ else if',
    )
    assert no_system != fmt.ollama_template
    text = go_template.generate_prompt(
        no_system, fmt.system, DETERMINISM_RECORD["instruction"] + "\n\n" + DETERMINISM_RECORD["input"]
    )
    derived = json.loads(_without_system_block()[1])
    assert tokenizer(text)["input_ids"] == derived["context"][: derived["prompt_eval_count"]]


def test_the_default_model_deploys_with_its_template_verified(
    tmp_path: Path, smollm2_gguf: Path, smollm2_tokenizer_dir: Path, start_replay_server
) -> None:
    server = start_replay_server(
        {**DEPLOY, "POST /api/generate": ["generate_templated_first_after_load", "warm_ended_by_stop"]},
        derived={"warm_ended_by_stop": _warm_ended_by_stop()},
    )
    cfg, run_dir = _default_run(tmp_path, smollm2_gguf, smollm2_tokenizer_dir, server.url)
    results = deploy.run(cfg, run_dir).to_dict()

    api = results["api_test"]
    assert api["status"] == "passed" and api["failures"] == []
    assert api["template"] == {
        "status": "verified",
        "cases_checked": 2,
        "matching_tokens": 270,
        "expected_tokens": 270,
        "case": 1,
        "request": "POST /api/generate",
        "reason": None,
    }
    first, second = api["cases"]
    assert second["done_reason"] == "stop" and second["observations"] == []
    assert first["prompt_tokens"]["status"] == "verified" and first["prompt_tokens"]["matching_tokens"] == 135
    # One answer at the limit is the model's behaviour: listed, not a failure.
    assert first["observations"] == ["at_limit"] and first["ok"] is True
    assert api["stops"] == {"status": "passed", "stopped": 1, "at_limit": 1, "at_limit_cases": ["test-1"]}
    # llama.cpp (here the untuned GGUF) reads the same prompt tokens; the answers are information only.
    compared = api["llamacpp"]
    assert compared["prompt_tokens_equal"] is True
    assert compared["interpretation"] in ("identical", "numeric_divergence")
    assert "template verified, 270/270 prompt tokens" in results["headline"]


def test_a_wrong_template_fails_at_the_first_differing_token(
    tmp_path: Path, smollm2_gguf: Path, smollm2_tokenizer_dir: Path, start_replay_server
) -> None:
    server = start_replay_server(
        {**DEPLOY, "POST /api/generate": ["without_system_block", "warm_ended_by_stop"]},
        derived={
            "without_system_block": _without_system_block(),
            "warm_ended_by_stop": _warm_ended_by_stop(),
        },
    )
    cfg, run_dir = _default_run(tmp_path, smollm2_gguf, smollm2_tokenizer_dir, server.url)
    results = deploy.run(cfg, run_dir).to_dict()

    api = results["api_test"]
    assert api["status"] == "failed" and api["failures"] == ["template_mismatch"]
    assert api["template"]["status"] == "failed" and api["template"]["case"] == 1
    tokens = api["cases"][0]["prompt_tokens"]
    assert (tokens["first_difference"], tokens["expected_tokens"], tokens["ollama_tokens"]) == (1, 135, 110)
    assert tokens["expected_around"].startswith("<|im_start|>system\n你是")
    assert tokens["ollama_around"].startswith("<|im_start|>user\n给")
    assert api["cases"][1]["prompt_tokens"]["status"] == "verified"
    assert api["llamacpp"]["prompt_tokens_equal"] is False
    assert api["llamacpp"]["interpretation"] == "prompt_differs"


def test_every_answer_at_the_limit_means_no_stop_marker(
    tmp_path: Path, smollm2_gguf: Path, smollm2_tokenizer_dir: Path, start_replay_server
) -> None:
    server = start_replay_server(
        {**DEPLOY, "POST /api/generate": ["generate_templated_first_after_load", "generate_templated_warm"]}
    )
    cfg, run_dir = _default_run(tmp_path, smollm2_gguf, smollm2_tokenizer_dir, server.url)
    api = deploy.run(cfg, run_dir).to_dict()["api_test"]
    assert api["template"]["status"] == "verified"
    assert api["stops"]["status"] == "failed" and api["stops"]["stopped"] == 0
    assert api["failures"] == ["no_stop"] and api["status"] == "failed"


def _truncated_stream() -> tuple[int, str]:
    """The recorded stream without its final (done) object, as a real server ended one."""
    lines = load_exchanges()["generate_stream"]["response_text"].splitlines()
    return 200, "\n".join(lines[:-1]) + "\n"


def _http_500() -> tuple[int, str]:
    """Ollama's recorded HTTP 500 answer (from /api/create), served for a generate request."""
    exchange = load_exchanges()["create_unknown_blob"]
    return exchange["status"], exchange["response_text"]


@pytest.mark.parametrize(
    ("failing", "error"),
    [
        ("truncated", "without a final (done) object"),
        ("http_500", "HTTP 500): open /root/.ollama/models/blobs/sha256-0000"),
    ],
)
def test_a_failed_request_is_recorded_and_the_stage_completes(
    tmp_path: Path,
    smollm2_gguf: Path,
    smollm2_tokenizer_dir: Path,
    start_replay_server,
    failing: str,
    error: str,
) -> None:
    server = start_replay_server(
        {
            **DEPLOY,
            "POST /api/generate": [failing, "generate_templated_first_after_load", "warm_ended_by_stop"],
        },
        derived={
            "truncated": _truncated_stream(),
            "http_500": _http_500(),
            "warm_ended_by_stop": _warm_ended_by_stop(),
        },
    )
    cfg, run_dir = _default_run(tmp_path, smollm2_gguf, smollm2_tokenizer_dir, server.url, cases=3)
    pipeline.run_stage(by_name("deploy"), cfg, run_dir)
    record = read_json(run_dir.stage_file("deploy"))
    assert record["status"] == "completed"
    api = record["results"]["api_test"]
    assert api["status"] == "failed" and api["failures"] == ["request_failed"]
    broken = api["cases"][0]
    assert broken["ok"] is False and broken["problems"] == ["request_failed"] and error in broken["error"]
    if failing == "truncated":
        assert broken["answer"] == "2 + 2 = 4."  # what arrived before the stream ended
    # The other cases still prove the template, and the comparison says why it was not made.
    assert api["template"]["status"] == "verified" and api["template"]["cases_checked"] == 2
    assert api["llamacpp"]["reason"] == "Ollama's first request failed"


def test_a_timed_out_request_is_recorded(
    tmp_path: Path, smollm2_gguf: Path, smollm2_tokenizer_dir: Path, start_replay_server
) -> None:
    server = start_replay_server(
        {**DEPLOY, "POST /api/generate": "generate_stream"}, stall_after=0, stall_s=3.0
    )
    cfg, run_dir = _default_run(tmp_path, smollm2_gguf, smollm2_tokenizer_dir, server.url, cases=1)
    cfg.deploy.timeout_s = 1.0
    api = deploy.run(cfg, run_dir).to_dict()["api_test"]
    (case,) = api["cases"]
    assert case["problems"] == ["request_failed"] and "ReadTimeout" in case["error"]
    assert api["status"] == "failed"


def test_a_refused_create_is_a_failed_deployment_unless_required(
    tmp_path: Path, smollm2_gguf: Path, smollm2_tokenizer_dir: Path, start_replay_server
) -> None:
    server = start_replay_server({**DEPLOY, "POST /api/create": "create_unknown_blob"})
    cfg, run_dir = _default_run(tmp_path, smollm2_gguf, smollm2_tokenizer_dir, server.url)
    pipeline.run_stage(by_name("deploy"), cfg, run_dir)
    record = read_json(run_dir.stage_file("deploy"))
    assert record["status"] == "completed"
    results = record["results"]
    assert results["status"] == "failed"
    assert "could not create model 'demo-finetuned' (HTTP 500)" in results["reason"]
    assert results["api_test"]["status"] == "not_run"
    cfg.deploy.required = True
    with pytest.raises(UserError, match=r"deploy\.required"):
        deploy.run(cfg, run_dir)
