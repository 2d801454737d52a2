"""Metric math on synthetic timings with known answers (benchmarks/metrics.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import metrics
from tests.ollama_replay import load_exchanges


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = [12.0, 3.0, 7.5, 100.0, 42.0, 8.0, 8.0]
    assert metrics.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_known_values() -> None:
    values = list(range(1, 101))  # 1..100
    assert metrics.percentile(values, 50) == pytest.approx(50.5)
    assert metrics.percentile(values, 90) == pytest.approx(90.1)
    assert metrics.percentile(values, 99) == pytest.approx(99.01)
    assert metrics.percentile([5.0], 99) == 5.0
    assert metrics.percentile([], 50) is None
    with pytest.raises(ValueError):
        metrics.percentile([1.0], 101)


def test_distribution_skips_missing_and_handles_empty() -> None:
    assert metrics.distribution([1.0, None, 3.0]) == {
        "mean": 2.0,
        "p50": 2.0,
        "p90": 2.8,
        "p99": pytest.approx(2.98),
    }
    assert metrics.distribution([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_request_metrics_known_stream() -> None:
    # sent at t=10 s, first token at 10.2 s, then one token every 50 ms, 5 tokens, done at 10.4 s
    chunks = [10.2, 10.25, 10.30, 10.35, 10.40]
    m = metrics.request_metrics(10.0, 10.4, 10.2, chunks, output_tokens=5, prompt_tokens=100)
    assert m["ttft_ms"] == pytest.approx(200.0)
    assert m["e2e_ms"] == pytest.approx(400.0)
    assert m["tpot_ms"] == pytest.approx(50.0)  # (400 - 200) / (5 - 1)
    assert m["itl_ms"] == pytest.approx([50.0] * 4)
    assert m["decode_tokens_per_s"] == pytest.approx(20.0)
    assert m["prompt_tokens_per_s"] == pytest.approx(500.0)


def test_tpot_with_one_token_is_undefined_not_a_crash() -> None:
    m = metrics.request_metrics(0.0, 0.3, 0.3, [0.3], output_tokens=1, prompt_tokens=None)
    assert m["tpot_ms"] is None
    assert m["decode_tokens_per_s"] is None
    assert m["itl_ms"] == []
    assert m["prompt_tokens_per_s"] is None
    assert metrics.tpot_ms(1.0, 0.5, 0) is None
    assert metrics.tpot_ms(1.0, None, 10) is None
    assert metrics.decode_tokens_per_s(0.5, 0.5, 10) is None  # zero decode time


def _ok(concurrency: int, ttft: float, e2e: float, tokens: int) -> dict:
    m = metrics.request_metrics(0.0, e2e, ttft, [ttft + i * 0.01 for i in range(tokens)], tokens, 50)
    return {"ok": True, "concurrency": concurrency, "output_tokens": tokens, "prompt_tokens": 50, **m}


def test_summarize_level_aggregate_and_failures() -> None:
    samples = [_ok(2, 0.1, 1.1, 11), _ok(2, 0.3, 1.3, 11), {"ok": False, "error": "boom", "concurrency": 2}]
    row = metrics.summarize_level(samples, concurrency=2, wall_s=2.0)
    assert row["requests"] == 3 and row["completed"] == 2 and row["failures"] == 1
    assert row["ttft_ms"]["mean"] == pytest.approx(200.0)
    assert row["ttft_ms"]["p50"] == pytest.approx(200.0)
    assert row["tpot_ms"]["p50"] == pytest.approx(100.0)  # 1000 ms / 10
    assert row["decode_tokens_per_s"] == pytest.approx(10.0)
    assert row["output_tokens_total"] == 22
    assert row["aggregate_tokens_per_s"] == pytest.approx(11.0)  # 22 tokens / 2 s
    assert row["requests_per_s"] == pytest.approx(1.0)
    assert "reason" not in row


def test_summarize_level_all_failed() -> None:
    samples = [{"ok": False, "error": "timeout", "concurrency": 1, "e2e_ms": 500.0}] * 3
    row = metrics.summarize_level(samples, concurrency=1, wall_s=1.5)
    assert row["failures"] == 3 and row["completed"] == 0
    assert row["ttft_ms"] == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert row["decode_tokens_per_s"] is None
    assert row["aggregate_tokens_per_s"] is None and row["requests_per_s"] is None
    assert row["reason"] == "all requests failed"
    json.dumps(row)  # stays serialisable


def test_server_timings_from_recorded_ollama_final_object() -> None:
    stream = load_exchanges()["generate_stream"]["response_text"].strip().split("\n")
    final = json.loads(stream[-1])
    t = metrics.server_timings(final)
    assert t["eval_count"] == 9 and t["prompt_eval_count"] == 64
    assert t["eval_ms"] == pytest.approx(66.215999)
    assert t["decode_tokens_per_s"] == pytest.approx(9 / 66215999 * 1e9)
    assert t["load_ms"] == pytest.approx(0.767501)


def test_roofline_takes_the_lower_limit() -> None:
    r = metrics.roofline(
        bandwidth_bytes_per_s=20e9, bytes_per_token=100e6, peak_flops_per_s=60e9, params=135_000_000,
        achieved_tokens_per_s=80.0,
    )  # fmt: skip
    assert r["memory_limit_tokens_per_s"] == pytest.approx(200.0)
    assert r["compute_limit_tokens_per_s"] == pytest.approx(60e9 / 270e6)
    assert r["bound"] == "memory"
    assert r["limit_tokens_per_s"] == pytest.approx(200.0)
    assert r["achieved_fraction"] == pytest.approx(0.4)
    compute_bound = metrics.roofline(1e12, 1e6, 1e9, 1_000_000_000, 0.25)
    assert compute_bound["bound"] == "compute" and compute_bound["limit_tokens_per_s"] == pytest.approx(0.5)
    missing = metrics.roofline(None, None, None, None, 10.0)
    assert missing["limit_tokens_per_s"] is None and missing["achieved_fraction"] is None


# A final chunk recorded from llama-server (this repository's build) for an 8-token request.
LLAMA_SERVER_TIMINGS = {
    "cache_n": 0,
    "prompt_n": 23,
    "prompt_ms": 96.269,
    "prompt_per_token_ms": 4.185608695652174,
    "prompt_per_second": 238.9138767412147,
    "predicted_n": 8,
    "predicted_ms": 100.814,
    "predicted_per_token_ms": 14.402,
    "predicted_per_second": 69.43480072212193,
}


def test_llamacpp_server_timings_use_the_ollama_keys() -> None:
    t = metrics.llamacpp_server_timings(LLAMA_SERVER_TIMINGS)
    assert t["prompt_eval_count"] == 23 and t["eval_count"] == 8
    assert t["prompt_eval_ms"] == pytest.approx(96.269) and t["eval_ms"] == pytest.approx(100.814)
    assert t["total_ms"] == pytest.approx(197.083)
    # (n - 1) decode steps per predicted_ms: the client's decode_tokens_per_s definition
    assert t["decode_tokens_per_s"] == pytest.approx(7 / 0.100814)
    assert t["cached_prompt_tokens"] == 0 and t["load_ms"] is None


def _sample(
    ttft_ms: float, e2e_ms: float, n: int, first: int | None, prompt_ms: float, server_tps: float
) -> dict:
    return {
        "ok": True,
        "concurrency": 1,
        "ttft_ms": ttft_ms,
        "e2e_ms": e2e_ms,
        "output_tokens": n,
        "first_chunk_tokens": first,
        "server": {"prompt_eval_ms": prompt_ms, "decode_tokens_per_s": server_tps},
    }


def test_timing_agreement_compares_like_with_like() -> None:
    # Server: 100 ms prompt, 10 ms per token (100 tok/s). Request A's first chunk is one token:
    # client TTFT 101 ms. Request B's first character took 3 tokens: the client sees it 2 tokens
    # (20 ms) after the server's prompt time, and times 64 - 3 tokens after it.
    a = _sample(101.0, 101.0 + 63 * 10.0, 64, 1, 100.0, 100.0)
    b = _sample(121.0, 121.0 + 61 * 10.0, 64, 3, 100.0, 100.0)
    failed = {"ok": False, "concurrency": 1, "server": None}
    other_level = {**a, "concurrency": 2, "ttft_ms": 5000.0}
    out = metrics.timing_agreement([a, b, failed, other_level], concurrency=1)
    assert out["requests"] == 2 and out["first_chunk_tokens_mean"] == 2
    ttft = out["ttft_ms"]
    assert ttft["server_mean"] == pytest.approx((100.0 + 120.0) / 2)
    assert ttft["client_mean"] == pytest.approx(111.0)
    assert ttft["difference"] == pytest.approx(111.0 / 110.0 - 1)
    assert ttft["worst_request_difference"] == pytest.approx(0.01)
    decode = out["decode_tokens_per_s"]
    assert decode["client_mean"] == pytest.approx(100.0) and decode["difference"] == pytest.approx(0.0)


def test_timing_agreement_without_server_timings() -> None:
    out = metrics.timing_agreement([{"ok": True, "concurrency": 1, "server": None}], concurrency=1)
    assert out == {"concurrency": 1, "requests": 0, "reason": "no request with server timings"}


def test_bandwidth_and_matmul_measurements_are_positive() -> None:
    from benchmarks import roofline

    m = roofline._measure_cpu(copy_mib=16, matmul_n=128, repeats=2, threads=2)
    assert m["bandwidth_bytes_per_s"] > 1e8 and m["copy_bandwidth_bytes_per_s"] > 1e8
    assert m["peak_flops_per_s"] > 1e6
    assert "read" in m["bandwidth_method"] and "2 thread(s)" in m["bandwidth_method"]
    assert "read + write" in m["copy_bandwidth_method"]


def test_roofline_takes_the_best_machine_sample() -> None:
    from benchmarks.runner import _best_machine

    samples = [
        {"bandwidth_bytes_per_s": 15e9, "bandwidth_method": "read", "copy_bandwidth_bytes_per_s": 22e9,
         "peak_flops_per_s": 90e9, "peak_flops_method": "matmul"},
        {"bandwidth_bytes_per_s": 18e9, "bandwidth_method": "read", "copy_bandwidth_bytes_per_s": 20e9,
         "peak_flops_per_s": 80e9, "peak_flops_method": "matmul"},
    ]  # fmt: skip
    best = _best_machine(samples)
    assert best["bandwidth_bytes_per_s"] == 18e9 and best["copy_bandwidth_bytes_per_s"] == 22e9
    assert best["peak_flops_per_s"] == 90e9 and "reason" not in best
    failed = _best_machine([{"bandwidth_bytes_per_s": None, "peak_flops_per_s": None, "reason": "timeout"}])
    assert failed == {"reason": "timeout"}
