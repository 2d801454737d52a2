"""The report's deployment verdicts (section 6.2 and 问题与改进) from deploy.json, in Chinese:
what was proven (prompt tokens), what differs (numerics), stops judged on the set, failed requests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reporting import report
from stages import reported
from tests import fake_run
from tests.reporting.helpers import kv, section
from trainer.config import load_config
from trainer.results import BenchmarkResult, DeployResult, EngineDetails, NotMeasured, PromptTokens, StopCheck
from trainer.runfolder import RunDir


def _markdown(path: Path) -> str:
    report.run(load_config(None, ["report.format=md"]), RunDir(path), reported())
    return (path / "report.md").read_text(encoding="utf-8")


@pytest.fixture
def complete(tmp_path: Path) -> Path:
    return fake_run.complete_run().write(tmp_path / "run")


def test_a_verified_template_and_numeric_divergence_are_worded(complete: Path) -> None:
    deploy = kv(section(_markdown(complete), "Ollama部署"))
    assert deploy["API测试"] == "通过（3 个请求，POST /api/generate）"
    assert deploy["模板验证"].startswith("已验证：Ollama 实际使用的提示 token")
    assert "3 个请求共 120/120 个 token" in deploy["模板验证"]
    assert deploy["停止标记"] == "通过：3/3 个回答以停止标记结束"
    cmp = deploy["与 llama.cpp 对比"]
    assert cmp.startswith("参考信息（不作为判定依据）；第 1 个请求的回答与 llama.cpp 的前 12 个 token 相同")
    assert "这是数值差异" in cmp and "不说明模板有误" in cmp
    assert "解码速度对比" not in deploy  # the benchmark ran through Ollama: one engine measured


def test_a_template_mismatch_a_failed_request_and_one_long_answer(complete: Path) -> None:
    def deploy(res: DeployResult) -> None:
        api = res.api_test
        api.status, api.failures = "failed", ["template_mismatch", "request_failed"]
        first, second, third = api.cases
        first.prompt_tokens = PromptTokens(
            status="failed",
            expected_tokens=40,
            ollama_tokens=30,
            matching_tokens=1,
            first_difference=1,
            expected_around="<|im_start|>system\n你是",
            ollama_around="<|im_start|>user\n你是",
        )
        api.cases[1] = replace(
            second,
            ok=False,
            problems=["request_failed"],
            error="Ollama at http://127.0.0.1:11434 refused to generate (HTTP 500): boom",
            done_reason=NotMeasured(),
            prompt_tokens=PromptTokens(status="not_checked", reason="request_failed"),
        )
        api.cases[2] = replace(third, done_reason="length", observations=["at_limit"])
        api.template = replace(
            api.template, status="failed", case=1, cases_checked=2, matching_tokens=41, expected_tokens=80
        )
        api.stops = StopCheck(status="passed", stopped=1, at_limit=1, at_limit_cases=["test-0003"])
        api.llamacpp = replace(api.llamacpp, prompt_tokens_equal=False, interpretation="prompt_differs")

    fake_run.edit(complete, "deploy", deploy)
    md = _markdown(complete)
    table = kv(section(md, "Ollama部署"))
    assert table["API测试"] == (
        "未通过（3 个请求，POST /api/generate）：Ollama 实际使用的提示 token 与训练格式不同；有请求失败"
    )
    assert table["模板验证"] == (
        "未通过：第 1 个请求的第 1 个 token 起不同（训练格式 40 个，Ollama 30 个）；"
        "训练格式此处为 “<|im_start|>system\\n你是”，Ollama 为 “<|im_start|>user\\n你是”"
    )
    assert table["停止标记"].startswith(
        "通过：1/3 个回答以停止标记结束；1 个回答达到 num_predict 上限，属于模型行为"
    )
    assert "提示 token 不同：Ollama 没有按训练格式提问" in table["与 llama.cpp 对比"]
    problems = section(md, "遇到的问题")
    assert "Ollama 实际使用的提示 token 与训练格式不同（第 1 个请求，41/80 个 token 相同）" in problems
    assert "API 测试中 1/3 个请求失败（Ollama 的错误：`Ollama at http://127.0.0.1:11434 refused" in problems
    assert "1/3 个回答达到 num_predict 上限" in problems
    cases = section(md, "Ollama部署")
    assert (
        "失败：请求失败（`Ollama at http://127.0.0.1:11434 refused to generate (HTTP 500): boom`）" in cases
    )
    assert "第 1 个起不同" in cases and "达到 num_predict 上限（模型行为）" in cases


def test_ollama_speed_is_explained_beside_llama_server(complete: Path) -> None:
    def benchmark(res: BenchmarkResult) -> None:
        res.engine = "llamacpp"
        res.engine_details = EngineDetails(server="native")

    fake_run.edit(complete, "benchmark", benchmark)
    speed = kv(section(_markdown(complete), "Ollama部署"))["解码速度对比"]
    assert speed.startswith(
        "Ollama 在 API 测试中解码 129.6 tokens/秒（3 个回答的中位数），llama-server 在基准测试中"
    )
    assert "两者运行同一个 GGUF 文件，差距来自服务端的构建（指令集、线程数）和设置，而不是模型本身" in speed
