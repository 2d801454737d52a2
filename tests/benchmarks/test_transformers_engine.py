"""The in-process transformers engine on a tiny random Llama built from a config (seconds on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.prompts import load_prompts
from benchmarks.runner import run_benchmark
from benchmarks.spec import BenchSettings
from tests.result_checks import assert_every_key_named
from trainer import prompt_format
from trainer.errors import UserError


def test_transformers_engine_fixed_length_per_token_timing(tiny_hf_model: Path) -> None:
    settings = BenchSettings(
        engine="transformers", engine_reason="test", model=str(tiny_hf_model), prompts=load_prompts(),
        prompt_format=prompt_format.build("chatml", "你是小知。"), prompt_format_source="test",
        concurrency=[1, 2], num_requests=2, max_tokens=8, threads=1, warmup_requests=1, measure_roofline=False,
    )  # fmt: skip
    results = run_benchmark(settings)
    assert_every_key_named("benchmark", results)  # the transformers engine's keys have fields
    assert results["failures_total"] == 0 and results["requests_total"] == 4
    for s in results["samples"]:
        assert s["output_tokens"] == 8 and s["output_tokens_source"] == "generated_ids"
        assert len(s["itl_ms"]) == 7  # one timestamp per generated token
        assert 0 < s["ttft_ms"] < s["e2e_ms"] and s["tpot_ms"] > 0
        assert s["prompt_tokens"] > 5
    assert results["quantization"] == "none (float32)"
    assert results["memory"]["server_peak_rss_bytes"] > 0
    arch = results["engine_details"]["arch"]
    assert arch["kv_bytes_per_position"] == 2 * 2 * 2 * 8 * 4
    assert any("one request at a time" in n for n in results["notes"])


def test_transformers_engine_rejects_a_folder_without_config(tmp_path: Path) -> None:
    settings = BenchSettings(
        engine="transformers", engine_reason="test", model=str(tmp_path), prompts=load_prompts(),
        prompt_format=None, prompt_format_source="test", measure_roofline=False,
    )  # fmt: skip
    with pytest.raises(UserError, match="neither a Hugging Face model folder"):
        run_benchmark(settings)


def test_transformers_timeout_fails_the_request_and_stops_generation(tiny_hf_model: Path) -> None:
    import threading

    from benchmarks.engines.hf import open_engine
    from benchmarks.spec import RequestSpec

    settings = BenchSettings(
        engine="transformers", engine_reason="test", model=str(tiny_hf_model), prompts=load_prompts(),
        prompt_format=None, prompt_format_source="test", threads=1, measure_roofline=False,
    )  # fmt: skip
    engine = open_engine(settings)
    try:
        spec = RequestSpec(number=1, phase="measured", prompt_id="x", question="你好", text="你好", tag="t",
                           max_tokens=4000, timeout_s=0.2, seed=0)  # fmt: skip
        raw = engine.generate(spec)
        assert not raw.ok and "timed out after 0.2 s" in (raw.error or "")
        assert not any(t.name == "bench-generate" and t.is_alive() for t in threading.enumerate())
        ok = engine.generate(RequestSpec(**{**spec.__dict__, "max_tokens": 4, "timeout_s": 60.0}))
        assert ok.ok and ok.output_tokens == 4  # the engine is usable again
    finally:
        engine.close()
