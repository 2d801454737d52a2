"""`python -m benchmarks` and the pipeline stage `benchmarks.pipeline.run`, against the Ollama replay
server (fast; the real llama.cpp server is in test_llamacpp_engine.py)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from benchmarks import pipeline, roofline
from benchmarks.__main__ import build_parser, main
from tests.fake_run import write_stage
from tests.ollama_replay import MODEL, SERVING_ROUTES, ReplayServer
from tests.result_checks import assert_every_key_named
from trainer import prompt_format
from trainer.config import load_config
from trainer.errors import UserError
from trainer.results import DeployResult, ExportResult, ModelFile
from trainer.runfolder import RunDir

FAST = [
    "--concurrency",
    "1,2",
    "--num-requests",
    "2",
    "--max-tokens",
    "16",
    "--threads",
    "1",
    "--no-roofline",
]


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for action in parser._actions:
        for option in action.option_strings:
            assert option in text
        if action.option_strings and action.help != "==SUPPRESS==":
            assert action.help, f"{action.option_strings} has no help text"


def test_bad_concurrency_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--model", "x", "--concurrency", "0,2"])
    assert exit_.value.code == 2
    assert "concurrency levels must be integers >= 1" in capsys.readouterr().err


def test_cli_ollama_writes_json_and_csv(
    serving_replay_server: ReplayServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "res" / "run.json"
    args = [
        "--engine",
        "ollama",
        "--model",
        MODEL,
        "--host",
        serving_replay_server.url,
        "--out",
        str(out),
        "--charts",
    ]
    code = main([*args, "--markdown", *FAST])
    assert code == 0
    assert "| concurrency | ok / failed |" in capsys.readouterr().out
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["environment"]["python"]
    assert data["settings"]["prompt_format"] is None  # auto for Ollama: its own template
    assert data["settings"]["prompts"]["version"] == "zh-bench-v1"
    assert [r["concurrency"] for r in data["summary"]] == [1, 2]
    assert len(data["samples"]) == 4
    assert data["roofline"]["reason"] == "not measured (--no-roofline)"
    rows = list(csv.DictReader((tmp_path / "res" / "run_requests.csv").open(encoding="utf-8")))
    assert len(rows) == 4 and rows[0]["server_eval_count"] == "9"
    assert {Path(p).name for p in data["files"]["charts"]} == {"run_latency.png", "run_tokens_per_s.png"}
    assert all(Path(p).stat().st_size > 1000 for p in data["files"]["charts"])


def test_cli_user_error_exits_2(
    serving_replay_server: ReplayServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--engine",
            "ollama",
            "--model",
            "nope",
            "--host",
            serving_replay_server.url,
            "--out",
            str(tmp_path / "r.json"),
            *FAST,
        ]
    )
    assert code == 2
    assert "model 'nope' not found" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_cli_failed_requests_exit_1_with_results_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ReplayServer(SERVING_ROUTES, model=MODEL, stall_after=2, stall_s=3.0) as server:
        code = main(["--engine", "ollama", "--model", MODEL, "--host", server.url, "--out", str(tmp_path / "r.json"),
                     "--request-timeout", "0.5", *FAST[:2], "--num-requests", "1", *FAST[4:]])  # fmt: skip
    assert code == 1
    assert "2 of 2 requests failed" in capsys.readouterr().err
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["failures_total"] == 2


def test_cli_missing_gguf_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["--engine", "llamacpp", "--model", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "r.json")]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def _run_folder(tmp: Path, tiny_gguf: Path, deploy: DeployResult) -> RunDir:
    run_dir = RunDir(tmp / "run")
    (run_dir.path / "models").mkdir(parents=True)
    shutil.copy(tiny_gguf, run_dir.path / "models" / "model-Q4_K_M.gguf")
    prompt_format.save(prompt_format.build("chatml", "你是小知。"), run_dir / prompt_format.FILE_NAME)
    export = ExportResult(
        merged=ModelFile(path="models/finetuned"), gguf=ModelFile(path="models/model-Q4_K_M.gguf")
    )
    write_stage(run_dir.path, "export", export)
    write_stage(run_dir.path, "deploy", deploy)
    return run_dir


def test_pipeline_stage_benchmarks_the_deployed_model(
    serving_replay_server: ReplayServer, tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_machine = {"bandwidth_bytes_per_s": 20e9, "peak_flops_per_s": 50e9, "bandwidth_method": "fake"}
    monkeypatch.setattr(roofline, "measure", lambda threads, device="cpu": fake_machine)
    run_dir = _run_folder(
        tmp_path, tiny_gguf, DeployResult(status="deployed", model_name=MODEL, host=serving_replay_server.url)
    )
    cfg = load_config(None, ["benchmark.concurrency=[1, 2]", "benchmark.num_requests=2", "benchmark.max_tokens=16",
                             "benchmark.threads=1"])  # fmt: skip
    results = pipeline.run(cfg, run_dir).to_dict()
    assert_every_key_named("benchmark", results)  # the Ollama engine's keys have fields too
    assert results["engine"] == "ollama"
    assert "deployed" in results["settings"]["engine_reason"]
    assert results["settings"]["prompt_format"] == "chatml"
    assert results["files"]["csv"] == "benchmark_requests.csv"
    assert (run_dir / "benchmark_requests.csv").is_file()
    assert results["files"]["charts"] == [
        "report_assets/benchmark_latency.png",
        "report_assets/benchmark_tokens_per_s.png",
    ]
    assert all((run_dir / p).is_file() for p in results["files"]["charts"])
    # the roofline used the run's GGUF (exact tensor bytes), not Ollama's file size
    roof = results["roofline"]
    assert roof["weight_bytes_source"] == "GGUF tensor bytes"
    assert roof["weight_bytes"] == 6 * 64 * 2 + 64 * 64 * 4
    assert roof["limit_tokens_per_s"] > 0 and roof["achieved_fraction"] > 0
    for key in ("engine", "model", "model_size_bytes", "quantization", "settings", "summary", "memory",
                "roofline", "samples", "files", "headline", "notes"):  # fmt: skip
        assert key in results
    for key in ("vram_bytes", "server_peak_rss_bytes"):
        assert key in results["memory"]
    json.dumps(results)


def test_pipeline_needs_an_export(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no completed export stage"):
        pipeline.run(load_config(None, []), RunDir(tmp_path))


def test_pipeline_ollama_engine_needs_a_deployment(tiny_gguf: Path, tmp_path: Path) -> None:
    run_dir = _run_folder(tmp_path, tiny_gguf, DeployResult(status="not_deployed", reason="no Ollama"))
    with pytest.raises(UserError, match="was not deployed"):
        pipeline.run(load_config(None, ["benchmark.engine=ollama"]), run_dir)
    engine, reason, model, gguf = pipeline.choose_engine(load_config(None, []), run_dir)
    assert engine == "llamacpp" and model == gguf and model.endswith("models/model-Q4_K_M.gguf")
    assert reason.code == "not_deployed" and "not deployed" in pipeline.engine_reason(reason)


def test_an_ollama_that_fails_the_benchmark_falls_back_to_llamacpp(
    smollm2_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`auto` chose the deployed model, but Ollama answers every generate with its HTTP 500: the
    reason is recorded and llama.cpp measures the same GGUF; the pipeline goes on."""
    fake_machine = {"bandwidth_bytes_per_s": 20e9, "peak_flops_per_s": 50e9, "bandwidth_method": "fake"}
    monkeypatch.setattr(roofline, "measure", lambda threads, device="cpu": fake_machine)
    with ReplayServer({**SERVING_ROUTES, "POST /api/generate": "create_unknown_blob"}) as server:
        run_dir = _run_folder(
            tmp_path, smollm2_gguf, DeployResult(status="deployed", model_name=MODEL, host=server.url)
        )
        cfg = load_config(None, ["benchmark.concurrency=[1]", "benchmark.num_requests=2", "benchmark.max_tokens=8",
                                 "benchmark.threads=1", "benchmark.warmup_requests=0"])  # fmt: skip
        results = pipeline.run(cfg, run_dir).to_dict()
    assert results["engine"] == "llamacpp"
    reason = results["settings"]["engine_reason"]
    assert reason.startswith(f"auto: Ollama at {server.url} failed the benchmark")
    assert "HTTP 500" in reason and reason.endswith("llama.cpp on the same GGUF")
    assert results["summary"][0]["requests"] == 2
