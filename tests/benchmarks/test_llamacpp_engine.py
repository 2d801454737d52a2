"""The llama.cpp engine: real servers on loopback (llama-cpp-python's, and llama.cpp's own
llama-server where the bootstrap built it) serving the embedded SmolLM2 Q4_1 GGUF (slow: one
small benchmark each), the choice between them, and start-up errors that need no model load."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest

from benchmarks.engines import llamacpp
from benchmarks.prompts import load_prompts
from benchmarks.runner import run_benchmark
from benchmarks.spec import BenchSettings
from tests.result_checks import assert_every_key_named
from trainer import prompt_format
from trainer.errors import UserError


def settings_for(model: Path, **kw) -> BenchSettings:
    base = dict(
        engine="llamacpp", engine_reason="test", model=str(model), prompts=load_prompts(),
        prompt_format=prompt_format.build("chatml", "你是小知，一个中文问答助手。"), prompt_format_source="test",
        concurrency=[2], num_requests=3, max_tokens=16, num_ctx=512, threads=1, warmup_requests=1,
        request_timeout_s=120.0, startup_timeout_s=120.0,
    )  # fmt: skip
    base.update(kw)
    return BenchSettings(**base)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_real_llamacpp_python_server_end_to_end(smollm2_gguf: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    results = run_benchmark(settings_for(smollm2_gguf, server_log=log, llamacpp_server="python"))
    assert results["engine_details"]["server"] == "python"
    assert results["failures_total"] == 0 and results["partial"] is False
    assert results["quantization"] == "Q4_1"
    assert results["model_size_bytes"] == smollm2_gguf.stat().st_size
    (row,) = results["summary"]
    assert row["concurrency"] == 2 and row["completed"] == 3
    for s in results["samples"]:
        # EOS suppressed: every request generated exactly max_tokens, all measured client-side
        assert s["output_tokens"] == 16 and s["finish_reason"] == "length"
        assert 0 < s["ttft_ms"] < s["e2e_ms"]
        assert s["tpot_ms"] > 0 and s["decode_tokens_per_s"] > 0
        assert s["prompt_tokens"] > 20 and s["output_text"]
    assert row["aggregate_tokens_per_s"] > 0
    # concurrent requests were queued, not cut short by the server's interrupt_requests default
    assert "--interrupt_requests False" in results["engine_details"]["server_command"]
    assert results["memory"]["server_peak_rss_bytes"] > 50 * 2**20
    assert results["memory"]["vram_reason"] == "no GPU" or results["memory"]["vram_bytes"] is not None
    roof = results["roofline"]
    assert roof["weight_bytes_source"] == "GGUF tensor bytes" and roof["kv_bytes_per_position"] > 0
    assert roof["limit_tokens_per_s"] > 0 and 0 < roof["achieved_fraction"] < 2
    # bandwidth measured right before and after the level it bounds
    assert len(roof["machine_samples"]) == 2 and "before and after" in roof["machine_samples_note"]
    # the server was stopped and its log kept
    assert not psutil.pid_exists(results["engine_details"]["server_pid"])
    assert "prompt eval time" in log.read_text(encoding="utf-8", errors="replace")
    assert results["timing_agreement"]["requests"] == 0  # this server reports no timings
    assert any("one request at a time" in note for note in results["notes"])


NATIVE, NATIVE_WHERE = llamacpp.find_native_server()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(NATIVE is None, reason=f"native llama-server not installed: {NATIVE_WHERE}")
def test_real_native_llama_server_end_to_end(smollm2_gguf: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    results = run_benchmark(settings_for(smollm2_gguf, server_log=log, llamacpp_server="native"))
    assert_every_key_named("benchmark", results)  # llama-server's keys have fields
    details = results["engine_details"]
    assert details["server"] == "native" and details["server_parallel_slots"] == 2
    assert details["llama_server_version"].startswith("version:")
    assert "--parallel 2" in details["server_command"] and "--ctx-size 1024" in details["server_command"]
    assert results["failures_total"] == 0 and results["partial"] is False
    (row,) = results["summary"]
    assert row["completed"] == 3 and row["server_decode_tokens_per_s"] > 0
    for s in results["samples"]:
        # ignore_eos: exactly max_tokens, counted by the server; its own timings recorded
        assert s["output_tokens"] == 16 and s["output_tokens_source"] == "server"
        assert s["finish_reason"] == "length" and s["output_text"]
        assert s["prompt_tokens"] > 20 and s["first_chunk_tokens"] >= 1
        assert s["server"]["eval_count"] == 16 and s["server"]["prompt_eval_ms"] > 0
        assert s["server"]["cached_prompt_tokens"] == 0  # cache_prompt false: every prompt evaluated
        assert 0 < s["ttft_ms"] < s["e2e_ms"]
    agreement = results["timing_agreement"]
    assert agreement["requests"] == 3
    for key in ("ttft_ms", "decode_tokens_per_s"):
        assert agreement[key]["requests"] >= 1 and agreement[key]["difference"] is not None
    # two slots: concurrent requests are batched, so no queueing note
    assert not any("one request at a time" in note for note in results["notes"])
    assert not psutil.pid_exists(details["server_pid"])
    assert "n_slots = 2" in log.read_text(encoding="utf-8", errors="replace")


@pytest.mark.skipif(NATIVE is None, reason=f"native llama-server not installed: {NATIVE_WHERE}")
def test_native_server_that_cannot_load_the_model_is_a_clear_user_error(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    # a valid GGUF header without the tensors a Llama needs: llama-server exits during start-up
    settings = settings_for(tiny_gguf, server_log=tmp_path / "server.log", llamacpp_server="native")
    with pytest.raises(UserError, match="exited during start-up") as err:
        run_benchmark(settings)
    assert str(tmp_path / "server.log") in str(err.value)


def test_server_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert llamacpp.choose_server("python")[0] == "python"
    not_executable = tmp_path / "llama-server"
    not_executable.write_text("")
    monkeypatch.setenv("LLAMA_SERVER", str(not_executable))
    kind, binary, reason = llamacpp.choose_server("auto")
    assert (kind, binary) == ("python", None) and "is not an executable file" in reason
    with pytest.raises(UserError, match=r"native llama\.cpp server was asked for"):
        llamacpp.choose_server("native")
    with pytest.raises(UserError, match="not known"):
        llamacpp.choose_server("vllm")
    not_executable.chmod(0o755)
    assert llamacpp.choose_server("auto")[:2] == ("native", not_executable)


def test_port_in_use_is_a_clear_user_error(smollm2_gguf: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is in use"):
            run_benchmark(settings_for(smollm2_gguf, port=port))


def test_missing_model_is_a_clear_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        run_benchmark(settings_for(tmp_path / "missing.gguf"))


def test_free_port_is_free() -> None:
    assert not llamacpp.port_in_use(llamacpp.free_port())
