"""`python run.py all` on the tiny config, end to end, as a user runs it (slow: ~2-3 min on 2 cores)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import stages

ROOT = Path(__file__).resolve().parent.parent
STAGES = tuple(stage.name for stage in stages.STAGES)


def _run(run_dir: Path, *extra: str, data_dir: Path | None = None) -> subprocess.CompletedProcess:
    data = sorted(str(p) for p in (data_dir or run_dir.parent / "data").glob("*.jsonl"))
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "all",
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--run-dir",
        str(run_dir),
        "deploy.host=http://127.0.0.1:9",
        f"data.files=[{','.join(data)}]",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def tiny_all(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    # A copy of the bundled data, so that a test can edit it as a user would.
    shutil.copytree(ROOT / "data" / "sample", run_dir.parent / "data", ignore=shutil.ignore_patterns("*.md"))
    first = _run(run_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return run_dir, first


def _results(run_dir: Path, stage: str) -> dict:
    record = json.loads((run_dir / f"{stage}.json").read_text())
    assert record["status"] == "completed", (stage, record.get("error"))
    return record["results"]


@pytest.mark.slow
def test_every_stage_completes_and_writes_its_artifacts(tiny_all):
    run_dir, first = tiny_all
    for stage in STAGES:
        _results(run_dir, stage)
    for rel in (
        "config.resolved.yaml",
        "env.json",
        "prompt_format.json",
        "data/train.jsonl",
        "data/val.jsonl",
        "data/test.jsonl",
        "data/rejected.jsonl",
        "adapter/adapter_model.safetensors",
        "logs/training.log",
        "logs/metrics.jsonl",
        "evaluation_results.csv",
        "models/finetuned/model.safetensors",
        "models/gguf/Modelfile",
        "report.md",
        "report.pdf",
    ):
        assert (run_dir / rel).exists(), rel
    assert list((run_dir / "runs").rglob("events.out.tfevents.*"))
    assert "Report:" in first.stdout and "not deployed" in first.stdout.lower() + first.stderr.lower()


@pytest.mark.slow
def test_artifacts_are_consistent_with_each_other_and_the_report(tiny_all):
    run_dir, _ = tiny_all
    prep = _results(run_dir, "prepare")
    for split, count in prep["splits"].items():
        assert len((run_dir / "data" / f"{split}.jsonl").read_text().splitlines()) == count
    assert sum(prep["splits"].values()) + sum(prep["dropped"].values()) == prep["records_in"]
    evaluation = _results(run_dir, "evaluate")
    assert evaluation["settings"]["samples"] == prep["splits"]["test"]
    export = _results(run_dir, "export")
    gguf = run_dir / export["gguf"]["path"]
    assert gguf.stat().st_size == export["gguf"]["size_bytes"] and export["gguf"]["file_type"] == 15
    deploy = _results(run_dir, "deploy")
    assert deploy["status"] == "not_deployed" and "ollama create" in deploy["deploy_command"]
    bench = _results(run_dir, "benchmark")
    assert bench["engine"] == "llamacpp" and bench["summary"]
    report = (run_dir / "report.md").read_text()
    assert "模型微调训练报告" in report
    assert deploy["model_name"] in report
    assert f"{prep['splits']['train']}" in report and f"{prep['splits']['test']}" in report
    from reporting.text import fmt_bytes

    assert fmt_bytes(gguf.stat().st_size) in report, "the GGUF size on disk appears in the report"
    assert not re.search(r"\[[^\]]*(X|Y|Z|填写|日期|姓名|是/否|成功/失败|通过/未通过)[^\]]*\]", report)


@pytest.mark.slow
def test_the_report_has_no_english_sentence(tiny_all):
    """Issue #21: every reason and note of a real run is worded in Chinese (or quoted as code)."""
    from tests.english_check import english_report_lines, english_sentences

    run_dir, _ = tiny_all
    report = (run_dir / "report.md").read_text()
    assert english_sentences(report) == [], english_report_lines(report)
    train = _results(run_dir, "train")
    assert train["precision_code"]["code"] in ("cpu_bf16_autocast", "cpu_no_bf16")
    assert _results(run_dir, "deploy")["reason_code"]["code"] == "no_ollama"


@pytest.mark.slow
def test_second_invocation_skips_completed_stages(tiny_all):
    run_dir, _ = tiny_all
    before = {
        s: json.loads((run_dir / f"{s}.json").read_text())["finished_at"] for s in STAGES if s != "report"
    }
    again = _run(run_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skipped") >= len(STAGES)
    after = {s: json.loads((run_dir / f"{s}.json").read_text())["finished_at"] for s in before}
    assert before == after


@pytest.mark.slow
def test_an_edited_data_file_reruns_prepare_and_every_later_stage(tiny_all):
    run_dir, _ = tiny_all
    before = {s: json.loads((run_dir / f"{s}.json").read_text())["finished_at"] for s in STAGES}
    records_in = _results(run_dir, "prepare")["records_in"]
    data_file = run_dir.parent / "data" / "zh_general.jsonl"
    record = {"instruction": "新增的问题：水的化学式是什么？", "input": "", "output": "水的化学式是 H2O。"}
    with data_file.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    again = _run(run_dir)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "skipped" not in again.stdout
    after = {s: json.loads((run_dir / f"{s}.json").read_text())["finished_at"] for s in STAGES}
    assert all(after[s] != before[s] for s in STAGES), (before, after)
    assert _results(run_dir, "prepare")["records_in"] == records_in + 1


def _conversations(n: int, kind: str, start: int) -> list[dict]:
    """n short conversations of 1-3 turns, ShareGPT (`conversations`) or `messages` form."""
    out = []
    for i in range(start, start + n):
        turns = [(f"第{i}组第{t}问：{i}加{t}等于几？", f"{i}加{t}等于{i + t}。") for t in range(1 + i % 3)]
        if kind == "sharegpt":
            msgs = [{"from": f, "value": v} for q, a in turns for f, v in (("human", q), ("gpt", a))]
            out.append({"conversations": msgs})
        else:
            msgs = [{"role": r, "content": v} for q, a in turns for r, v in (("user", q), ("assistant", a))]
            out.append({"messages": [{"role": "system", "content": "你是算术助手。"}, *msgs]})
    return out


@pytest.mark.slow
def test_multi_turn_conversation_files_run_through_all(tmp_path):
    """ShareGPT and messages files, multi-turn, through every stage of `run.py all` (tiny config)."""
    run_dir = tmp_path / "conv" / "run"
    (tmp_path / "conv" / "data").mkdir(parents=True)
    for kind, start in (("sharegpt", 0), ("messages", 1000)):
        rows = _conversations(120, kind, start)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (tmp_path / "conv" / "data" / f"{kind}.jsonl").write_text(text, encoding="utf-8")
    done = _run(run_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for stage in STAGES:
        _results(run_dir, stage)
    prep = _results(run_dir, "prepare")
    assert set(prep["record_formats"]) == {"sharegpt", "messages"} and prep["multi_turn_records"] > 100
    train_rows = [json.loads(x) for x in (run_dir / "data" / "train.jsonl").read_text().splitlines()]
    assert any(len(r.get("history", [])) == 2 for r in train_rows)
    assert _results(run_dir, "evaluate")["settings"]["samples"] == prep["splits"]["test"]
    assert _results(run_dir, "export")["verification"]["architecture"] == "llama"
    assert "多轮对话" in (run_dir / "report.md").read_text()


@pytest.mark.slow
def test_a_misbehaving_ollama_is_recorded_and_all_reaches_the_report(tiny_all, tmp_path):
    """Ollama creates the model, then cuts one answer short and fails the next with HTTP 500: deploy
    records both cases with their errors and `all` goes on through benchmark and report."""
    from tests.ollama_replay import ReplayServer, load_exchanges

    run_dir, _ = tiny_all
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)  # the same data files: only deploy and what follows rerun
    exchanges = load_exchanges()
    stream = exchanges["generate_stream"]["response_text"].splitlines()
    failing = exchanges["create_unknown_blob"]  # a real Ollama HTTP 500 answer
    routes = {
        "GET /api/version": "version",
        "HEAD /api/blobs/*": "blob_head_absent",
        "POST /api/blobs/*": "blob_upload_new",
        "POST /api/create": "create",
        "POST /api/generate": ["cut_short", "http_500"],
        "GET /api/ps": "ps",
    }
    derived = {
        "cut_short": (200, "\n".join(stream[:-1]) + "\n"),  # no final (done) object
        "http_500": (failing["status"], failing["response_text"]),
    }
    with ReplayServer(routes, derived=derived) as server:
        done = _run(
            copy, f"deploy.host={server.url}", "deploy.test_prompts=2", data_dir=run_dir.parent / "data"
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    deploy = _results(copy, "deploy")
    api = deploy["api_test"]
    assert (
        deploy["status"] == "deployed" and api["status"] == "failed" and "request_failed" in api["failures"]
    )
    first, second = api["cases"]
    assert "without a final (done) object" in first["error"] and first["answer"] == "2 + 2 = 4."
    assert "HTTP 500" in second["error"] and "no such file or directory" in second["error"]
    assert _results(copy, "benchmark")["engine"] == "llamacpp"
    _results(copy, "report")
    report = (copy / "report.md").read_text()
    assert "API 测试中 2/2 个请求失败" in report and "失败：请求失败" in report
    from tests.english_check import english_report_lines, english_sentences

    assert english_sentences(report) == [], english_report_lines(report)


@pytest.mark.slow
def test_the_terminal_shows_one_line_per_stage_and_the_log_has_the_details(tiny_all):
    """A quiet terminal: one progress line per stage, the summary, nothing from the libraries (no
    tqdm bars, no logged dicts, no import-time warnings); those details are in logs/training.log."""
    run_dir, first = tiny_all
    lines = first.stdout.splitlines()
    for stage in STAGES:
        own = [line for line in lines if line.startswith(f"{stage} ") and "━" in line]
        assert len(own) == 1, (stage, own)
    train_line = next(line for line in lines if line.startswith("train "))
    assert re.search(r"\d+/\d+ .*loss \d+\.\d+.* tok/s", train_line), train_line
    assert first.stderr == "", first.stderr[-2000:]
    noise = ("it/s]", "{'loss'", "Loading weights", "llama_model_loader", "Failed to load", "Warning")
    assert not [line for line in lines if any(n in line for n in noise)]
    log = (run_dir / "logs" / "training.log").read_text(encoding="utf-8")
    for stage in STAGES:
        assert f"stage {stage} started" in log, stage
    assert "INFO trainer.train: step 1 " in log and "llama_model_loader" in log
