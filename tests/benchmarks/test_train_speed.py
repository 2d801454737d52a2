"""`python -m benchmarks.train_speed` on the tiny model: every contestant runs and the JSON has its shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.train_speed import CONTESTANTS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--config", "--steps", "--backends", "--out"):
        assert option in text


def test_bad_arguments_are_rejected() -> None:
    parser = build_parser()
    for bad in (["--steps", "1"], ["--backends", "unsloth,hf"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


@pytest.mark.slow
def test_tiny_run_writes_every_contestant(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.train_speed",
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--steps",
        "2",
        "--out",
        str(out),
        "--matmul-n",
        "256",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.exists(), (done.stdout + done.stderr)[-4000:]
    report = json.loads(out.read_text())
    assert report["settings"]["steps"] == 2
    assert report["matmul_peak"]["peak_flops_per_s"] > 0
    assert set(report["machine_load"]) == {"before", "after"}
    by_name = {r["contestant"]: r for r in report["results"]}
    assert list(by_name) == list(CONTESTANTS)
    for name in ("peft", "baseline"):  # the tiny config's own backend and the baseline must run
        r = by_name[name]
        assert r["status"] == "ok", r
        assert r["global_step"] == 2
        assert r["steady"]["tokens_per_s"] > 0 and r["steady"]["s_per_step"] > 0
        assert r["peak_rss_bytes"] > 0
        assert 0 < r["mfu"] < 1
        assert r["n_frozen_matmul"] > 0 and r["n_lora"] > 0
    assert by_name["baseline"]["speedup_vs_baseline"] == 1.0
    auto = by_name["auto"]  # the default configuration: the backend its own probe measured faster
    assert auto["status"] == "ok", auto
    assert auto["backend_choice"]["reason"] in ("probe_faster", "probe_other_failed")
    assert auto["backend"] == auto["backend_choice"]["backend"] and auto["backend_choice"]["probe_cost_s"] > 0
    assert by_name["unsloth"]["status"] in ("ok", "failed")
    if by_name["unsloth"]["status"] == "ok":
        assert by_name["unsloth"]["speedup_vs_baseline"] > 0
    assert done.returncode == (0 if by_name["unsloth"]["status"] == "ok" else 1)
    assert "Training speed" in done.stdout
