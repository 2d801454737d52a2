"""The Ollama engine against a loopback server replaying recorded Ollama responses, plus one test
against a real Ollama server (marker `ollama`, skipped when OLLAMA_HOST does not answer)."""

from __future__ import annotations

import pytest

from benchmarks.prompts import load_prompts
from benchmarks.runner import INTERRUPTED, run_benchmark
from benchmarks.spec import BenchSettings
from tests.ollama_replay import MODEL, SERVING_ROUTES, ReplayServer, refused_url
from tests.result_checks import assert_every_key_named
from trainer import prompt_format
from trainer.errors import UserError
from trainer.ollama_client import answers, resolve_host


def settings_for(host: str, model: str = MODEL, **kw) -> BenchSettings:
    base = dict(
        engine="ollama", engine_reason="test", model=model, prompts=load_prompts(),
        prompt_format=prompt_format.build("chatml", "你是小知。"), prompt_format_source="test",
        concurrency=[1, 2], num_requests=3, max_tokens=16, num_ctx=1024, threads=1, warmup_requests=1,
        request_timeout_s=10.0, host=host, measure_roofline=False,
    )  # fmt: skip
    base.update(kw)
    return BenchSettings(**base)


def test_replayed_ollama_benchmark_records_client_and_server_timings(
    serving_replay_server: ReplayServer,
) -> None:
    results = run_benchmark(settings_for(serving_replay_server.url))
    assert results["engine"] == "ollama"
    assert results["partial"] is False and results["failures_total"] == 0
    assert results["requests_total"] == 6
    assert [row["concurrency"] for row in results["summary"]] == [1, 2]
    for row in results["summary"]:
        assert row["completed"] == 3 and row["failures"] == 0
        assert row["ttft_ms"]["p50"] > 0 and row["e2e_ms"]["p99"] >= row["e2e_ms"]["p50"]
        assert row["server_decode_tokens_per_s"] == pytest.approx(9 / 66215999 * 1e9)
        assert row["aggregate_tokens_per_s"] > 0 and row["requests_per_s"] > 0
    sample = results["samples"][0]
    assert sample["output_tokens"] == 9 and sample["output_tokens_source"] == "server"
    assert sample["prompt_tokens"] == 64 and sample["finish_reason"] == "stop"
    assert sample["ttft_ms"] < sample["e2e_ms"]
    assert len(sample["itl_ms"]) == 7  # 8 non-empty chunks in the recorded stream
    assert sample["server"]["eval_ms"] == pytest.approx(66.215999)
    assert sample["output_text"] == "2 + 2 = 4."
    # memory and model facts from /api/ps, /api/tags, /api/show
    assert results["memory"]["vram_bytes"] == 0
    assert "CPU" in results["memory"]["vram_reason"]
    assert results["memory"]["ollama_size_bytes"] == 167310784
    assert results["quantization"] == "Q4_K_M"
    assert results["model_size_bytes"] == 105454473
    assert results["engine_details"]["arch"]["kv_bytes_per_position"] == 2 * 30 * 3 * 64 * 2
    assert any("stopped before max_tokens" in n for n in results["notes"])
    assert results["headline"].startswith("ollama Q4_K_M:")
    # client-side vs Ollama-reported timings at concurrency 1 (the replay's pace is not Ollama's,
    # so only the pairing is checked here; the live test below has real numbers)
    agreement = results["timing_agreement"]
    assert agreement["concurrency"] == 1 and agreement["requests"] == 3
    assert agreement["decode_tokens_per_s"]["server_mean"] == pytest.approx(9 / 66215999 * 1e9)
    assert agreement["ttft_ms"]["requests"] == 3


def test_requests_are_raw_with_pinned_options_and_unique_prompts(serving_replay_server: ReplayServer) -> None:
    run_benchmark(settings_for(serving_replay_server.url, concurrency=[1], num_requests=3, seed=7, threads=2))
    bodies = [r.json for r in serving_replay_server.requests_to("POST", "/api/generate")]
    assert len(bodies) == 1 + 1 + 3  # sanity, warm-up, measured
    for body in bodies:
        assert body["raw"] is True and body["stream"] is True
        assert body["prompt"].startswith("<|im_start|>system\n")
        opts = body["options"]
        assert opts["num_ctx"] == 1024 and opts["temperature"] == 0 and opts["seed"] == 7
        assert opts["num_thread"] == 2
    assert bodies[0]["options"]["num_predict"] == 8  # the short sanity request
    assert all(b["options"]["num_predict"] == 16 for b in bodies[1:])
    assert len({b["prompt"] for b in bodies}) == len(bodies)
    # the prompts part right after the format's first marker: the random tag comes first
    shared = "<|im_start|>system\n"
    heads = [b["prompt"][len(shared) : len(shared) + 6] for b in bodies]
    assert len(set(heads)) == len(heads)


def test_without_prompt_format_ollama_applies_its_template(serving_replay_server: ReplayServer) -> None:
    run_benchmark(
        settings_for(
            serving_replay_server.url, prompt_format=None, concurrency=[1], num_requests=1, warmup_requests=0
        )
    )
    bodies = [r.json for r in serving_replay_server.requests_to("POST", "/api/generate")]
    assert all("raw" not in b and "<|im_start|>" not in b["prompt"] for b in bodies)


def test_unknown_model_is_a_clear_user_error(serving_replay_server: ReplayServer) -> None:
    with pytest.raises(UserError, match="model 'nope' not found") as err:
        run_benchmark(settings_for(serving_replay_server.url, model="nope"))
    assert "python run.py deploy" in str(err.value)


def test_unreachable_server_is_a_clear_user_error() -> None:
    with pytest.raises(UserError, match="unreachable"):
        run_benchmark(settings_for(refused_url()))


def test_request_timeouts_are_counted_not_raised() -> None:
    # sanity + warm-up answer; every measured request stalls past the 0.5 s timeout
    with ReplayServer(SERVING_ROUTES, model=MODEL, stall_after=2, stall_s=3.0) as server:
        results = run_benchmark(
            settings_for(server.url, concurrency=[2], num_requests=2, request_timeout_s=0.5)
        )
    assert results["failures_total"] == 2 and results["requests_total"] == 2
    row = results["summary"][0]
    assert row["reason"] == "all requests failed" and row["ttft_ms"]["p50"] is None
    assert all("timed out" in s["error"] for s in results["samples"])
    assert any("2 of 2 requests failed" in n for n in results["notes"])


def test_ctrl_c_keeps_partial_results(
    serving_replay_server: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the middle of a level: finished requests are kept and the run is marked partial."""
    from benchmarks.engines.ollama import OllamaEngine

    real = OllamaEngine.generate
    calls = {"n": 0}

    def generate(self, req):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:  # sanity, warm-up, one measured, then Ctrl-C
            raise KeyboardInterrupt
        return real(self, req)

    monkeypatch.setattr(OllamaEngine, "generate", generate)
    results = run_benchmark(settings_for(serving_replay_server.url, concurrency=[1, 2], num_requests=3))
    assert_every_key_named("benchmark", results)  # a partial run's keys have fields too
    assert results["partial"] is True and results["partial_reason"] == INTERRUPTED
    assert results["requests_total"] == 1 and results["samples"][0]["ok"]
    assert [r["concurrency"] for r in results["summary"]] == [1]


def test_server_death_stops_the_run_as_partial(
    serving_replay_server: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.engines.ollama import OllamaEngine

    real = OllamaEngine.generate
    served = {"n": 0}

    def generate(self, req):  # type: ignore[no-untyped-def]
        served["n"] += 1
        return real(self, req)

    monkeypatch.setattr(OllamaEngine, "generate", generate)
    # "dies" once sanity, warm-up and two measured requests were served
    monkeypatch.setattr(OllamaEngine, "alive", lambda self: served["n"] < 4)
    results = run_benchmark(settings_for(serving_replay_server.url, concurrency=[1, 2], num_requests=3))
    assert results["partial"] is True
    assert results["partial_reason"] == "the server process exited during the run: 1 request(s) not sent"
    assert results["requests_total"] == 2 and results["failures_total"] == 0


def test_time_budget_marks_the_run_partial(serving_replay_server: ReplayServer) -> None:
    results = run_benchmark(
        settings_for(serving_replay_server.url, concurrency=[1, 2], num_requests=3, max_duration_s=0.01)
    )
    assert results["partial"] is True and "time budget" in results["partial_reason"]
    assert results["requests_total"] == 0 and results["summary"] == []


def test_a_proxy_in_the_environment_is_not_used_for_loopback(
    serving_replay_server: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmark reaches a loopback Ollama through the deploy stage's client: no proxy."""
    proxy = refused_url()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    results = run_benchmark(
        settings_for(serving_replay_server.url, concurrency=[1], num_requests=1, warmup_requests=0)
    )
    assert results["failures_total"] == 0 and results["requests_total"] == 1


@pytest.mark.ollama
def test_real_ollama_server() -> None:
    host = resolve_host(None)
    if not answers(host):
        pytest.skip(f"no Ollama server answers at {host} (set OLLAMA_HOST)")
    import httpx

    models = [m["name"] for m in httpx.get(f"{host}/api/tags", timeout=10).json().get("models", [])]
    if not models:
        pytest.skip(f"the Ollama server at {host} has no models")
    results = run_benchmark(
        settings_for(host, model=models[0], prompt_format=None, concurrency=[1], num_requests=2, max_tokens=8,
                     request_timeout_s=120.0)
    )  # fmt: skip
    assert results["failures_total"] == 0
    assert results["samples"][0]["server"]["eval_count"] >= 1
    assert results["memory"]["vram_bytes"] is not None
    assert results["timing_agreement"]["requests"] == 2
