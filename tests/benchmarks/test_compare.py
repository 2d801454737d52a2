"""`python -m benchmarks.compare`: llama.cpp against the in-process transformers baseline in one run
(a real llama.cpp server with the embedded SmolLM2 GGUF; a tiny random model as the baseline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import compare
from benchmarks.engines.llamacpp import find_native_server


def test_summary_means_rounds_and_divides_by_the_baseline() -> None:
    rows = [
        {"contestant": "llamacpp-native", "decode_tokens_per_s": 60.0, "ttft_ms_p50": 300.0},
        {"contestant": "transformers", "decode_tokens_per_s": 8.0, "ttft_ms_p50": None},
        {"contestant": "llamacpp-native", "decode_tokens_per_s": 70.0, "ttft_ms_p50": 320.0},
        {"contestant": "transformers", "decode_tokens_per_s": 12.0, "ttft_ms_p50": None},
    ]
    for r in rows:
        r.update(e2e_ms_p50=None, peak_rss_bytes=None, roofline_fraction=None)
    native, base = compare.summarize(rows)
    assert native["rounds"] == 2 and native["decode_tokens_per_s"] == pytest.approx(65.0)
    assert native["ttft_ms_p50"] == pytest.approx(310.0) and base["ttft_ms_p50"] is None
    assert native["speedup_vs_baseline"] == pytest.approx(6.5) and base[
        "speedup_vs_baseline"
    ] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_compare_runs_every_contestant_and_writes_json(
    smollm2_gguf: Path, tiny_hf_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "compare.json"
    servers = "native,python" if find_native_server()[0] else "python"
    argv = ["--gguf", str(smollm2_gguf), "--hf", str(tiny_hf_model), "--servers", servers,
            "--prompt-format", "chatml", "--rounds", "1", "--num-requests", "1", "--max-tokens", "8",
            "--threads", "1", "--no-roofline", "--out", str(out)]  # fmt: skip
    assert compare.main(argv) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    labels = [f"llamacpp-{s}" for s in servers.split(",")] + ["transformers"]
    assert [r["contestant"] for r in data["rows"]] == labels
    for row in data["rows"]:
        assert row["completed"] == 1 and row["failures"] == 0 and row["decode_tokens_per_s"] > 0
    assert {r["contestant"]: r["speedup_vs_baseline"] for r in data["summary"]}["transformers"] == 1.0
    assert len(data["runs"]) == len(labels) and data["command"].startswith("python -m benchmarks.compare")
