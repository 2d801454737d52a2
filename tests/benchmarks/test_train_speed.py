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


def _run(status: str, tps: float | None, tag: str) -> dict:
    steady = {"tokens_per_s": tps, "s_per_step": 1000 / tps} if tps else {}
    params = {"n_frozen_matmul": 1_000_000, "n_lora": 10_000}
    return {"contestant": "peft", "status": status, "steady": steady, "tag": tag, **params}


def test_rounds_report_the_lower_median_round_and_the_worst_pairing() -> None:
    from benchmarks.train_speed import _compare, combine_rounds

    assert combine_rounds([_run("ok", 300.0, "only")])["tag"] == "only"  # one round: as it ran
    three = combine_rounds([_run("ok", 390.0, "a"), _run("ok", 310.0, "b"), _run("ok", 350.0, "c")])
    assert three["tag"] == "c" and [r["tokens_per_s"] for r in three["rounds"]] == [390.0, 310.0, 350.0]
    two = combine_rounds([_run("ok", 400.0, "a"), _run("ok", 320.0, "b")])
    assert two["tag"] == "b"  # two rounds: the slower one, never the luckier
    failed = combine_rounds([_run("ok", 400.0, "a"), _run("failed", None, "b")])
    assert failed["status"] == "failed" and failed["tag"] == "b"
    base = combine_rounds([_run("ok", 100.0, "x"), _run("ok", 125.0, "y")]) | {"contestant": "baseline"}
    results = [two, base]
    _compare(results, {"fp32": {"peak_flops_per_s": 1e11}})
    assert two["speedup_vs_baseline"] == 3.2  # 320 / 100: the lower medians
    assert two["speedup_worst_pairing"] == 2.56  # 320 / 125: its slowest round over the fastest baseline


def test_rounds_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--rounds", "0"])
    assert build_parser().parse_args(["--rounds", "3"]).rounds == 3
