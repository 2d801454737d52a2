"""The report's Chinese wording of the stages' reasons and notes (`python run.py report`).

Reads and writes nothing. The stages write a reason twice: an English sentence for the terminal
(`precision_reason`, `notes`) and the same as data (`precision_code`, `note_codes`: a
`trainer.results.Reason`, a code and its parameters, docs/ARTIFACTS.md). `reason()` words the code
in Chinese. A few fixed English reasons that have no code field (`gpu_reason`, the benchmark's
engine, server and memory reasons) are matched by pattern below. Anything else in Latin script (an
error message, a note of an older run folder or of a newer stage) is quoted as written
(`reporting.text.verbatim`, a code span in the report), never passed off as the report's own
Chinese; text that is already Chinese is shown as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from reporting.text import verbatim
from trainer.results import NotMeasured, Reason, measured

_SETTING = {"auto": "auto（自动选择）"}
_CJK = re.compile(r"[\u4e00-\u9fff]")


def _setting(p: dict[str, Any]) -> str:
    requested = str(p.get("requested", ""))
    return _SETTING.get(requested, f"train.precision={requested}")


def _drop_reason(reason: Any) -> str:
    from reporting.facts import DROP_REASON_ZH  # here: facts words its sentences with this module

    return DROP_REASON_ZH.get(str(reason), verbatim(reason))


def _units(p: dict[str, Any]) -> str:
    return "、".join(str(u) for u in p.get("units") or []) or "未记录"


# Code -> Chinese wording of its parameters. Codes written by trainer/backends.py (precision,
# quantization), trainer/train.py and trainer/deploy.py (note_codes, reason_code).
CODES: dict[str, Callable[[dict[str, Any]], str]] = {
    # train.json precision_code
    "cpu_bf16_autocast": lambda p: (
        f"{_setting(p)}：没有 CUDA GPU，本机 CPU 有 bf16 运算单元（{_units(p)}），在 CPU 上以 bf16 自动混合精度训练"
    ),
    "cpu_no_bf16": lambda p: (
        f"{_setting(p)}：没有 CUDA GPU，CPU 也没有 bf16 运算单元（avx512_bf16/amx_bf16），使用 fp32"
    ),
    "fp16_needs_cuda": lambda p: "train.precision=fp16 需要 CUDA GPU，本机没有，改用 fp32",
    "gpu_bf16": lambda p: "auto（自动选择）：GPU 支持 bf16",
    "gpu_no_bf16": lambda p: f"{_setting(p)}：GPU 不支持 bf16，改用 fp16 混合精度",
    "as_configured": lambda p: f"按配置 train.precision={p.get('requested', '未记录')}",
    # train.json quantization_code
    "4bit_off": lambda p: "按配置 model.load_in_4bit=false，不量化",
    "4bit_needs_cuda": lambda p: (
        "model.load_in_4bit=true 需要 CUDA GPU（bitsandbytes NF4），本机没有，改为全精度训练"
    ),
    "4bit_nf4": lambda p: "在 CUDA 上以 4-bit NF4（bitsandbytes）加载基础模型",
    # train.json note_codes
    "backend_fallback": lambda p: (
        f"train.backend=auto 回退到 {p.get('backend', 'peft')}：" + verbatim(p.get("text"))
    ),
    "resumed": lambda p: f"从检查点 {p.get('checkpoint', '未记录')} 断点续训",
    "probe_cost": lambda p: (
        f"训练后端测速用去 {p.get('seconds')} 秒，已从 train.max_minutes={p.get('max_minutes')} 的时间上限中扣除"
    ),
    "time_budget_stop": lambda p: (
        f"达到时间上限 train.max_minutes={p.get('max_minutes')}，"
        f"在第 {p.get('step')} 步（计划 {p.get('planned_steps')} 步）停止"
    ),
    "data_parallel": lambda p: (
        f"在 {p.get('processes')} 个进程上数据并行训练：tokens/秒 为全部进程之和，峰值 RSS 只计主进程"
    ),
    # deploy.json reason_code and note_codes
    "no_ollama": lambda p: f"在 {p.get('host', '未记录的地址')} 没有可用的 Ollama 服务",
    "ollama_error": lambda p: "Ollama 返回错误：" + verbatim(p.get("error")),
    "deploy_by_hand": lambda p: (
        f"在 {p.get('host', '未记录的地址')} 没有可用的 Ollama 服务，可按“部署命令”一栏手动部署"
    ),
    "deploy_failed": lambda p: "部署失败，Ollama 返回错误：" + verbatim(p.get("error")),
    "created": lambda p: f"已在 {p.get('host')} 的 Ollama {p.get('version')} 上创建模型 {p.get('name')}",
    "api_test_not_run": lambda p: "未运行 API 测试：" + text(p.get("text")),
    # benchmark.json settings.engine_code (benchmarks/pipeline.py); "configured" is also the engine's
    "configured": lambda p: f"按配置 benchmark.engine={p.get('engine', '未记录')}",
    "ollama_deployed": lambda p: (
        f"auto（自动选择）：模型已部署为 {p.get('model')}，{p.get('host')} 的 Ollama 有响应"
    ),
    "ollama_not_answering": lambda p: f"auto（自动选择）：{p.get('host')} 的 Ollama 没有响应，改用 llama.cpp",
    "not_deployed": lambda p: "auto（自动选择）：模型未部署到 Ollama，改用 llama.cpp",
    "ollama_failed_benchmark": lambda p: (
        f"auto（自动选择）：{p.get('host')} 的 Ollama 基准测试失败（"
        + verbatim(p.get("error"))
        + "），改用 llama.cpp 测同一个 GGUF"
    ),
    # prepare.json note_codes (trainer/prepare_data.py); a drop reason is a code of its own
    "dropped": lambda p: f"{p.get('count')} 条记录因“{_drop_reason(p.get('reason'))}”被剔除",
    "truncated": lambda p: f"{p.get('count')} 条回答被截断到 data.max_length={p.get('max_length')} 个 token",
    # evaluate.json note_codes (trainer/evaluate.py)
    "generation_failures": lambda p: f"{p.get('count')} 个样本生成失败（见 {p.get('csv')}）",
    # benchmark.json note_codes (benchmarks/runner.py)
    "requests_failed": lambda p: (
        f"{p.get('total')} 个请求中 {p.get('failed')} 个失败：" + verbatim(p.get("errors"))
    ),
    "warmup_failed": lambda p: f"{p.get('count')} 个预热请求失败",
    "partial": lambda p: "结果不完整：" + text(p.get("text")),
    "queueing": lambda p: (
        f"{p.get('server')} 一次只处理一个请求：并发大于 1 时测到的是排队（首 token 时间变长），而不是批处理"
    ),
    "stopped_early": lambda p: (
        f"{p.get('count')} 个请求在 max_tokens 之前结束（finish_reason 不是 length），按实际生成的 token 数计算"
    ),
    # a note the stage had no code for: quoted as written
    "text": lambda p: "原文：" + verbatim(p.get("text")),
}

# Fixed English reasons without a code field (train.json gpu_reason, benchmark.json settings and
# memory), matched whole; a group is quoted as written.
KNOWN: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"no CUDA GPU on this machine"), lambda m: "本机没有 CUDA GPU"),
    (re.compile(r"no GPU"), lambda m: "没有 GPU"),
    (re.compile(r"not sampled"), lambda m: "未采样"),
    (re.compile(r"benchmark\.engine=(\w+)"), lambda m: f"按配置 benchmark.engine={m.group(1)}"),
    (re.compile(r"benchmarks\.compare"), lambda m: "由 benchmarks.compare 指定"),
    (
        re.compile(r"auto: Ollama does not answer at (\S+)"),
        lambda m: f"auto：{m.group(1)} 的 Ollama 没有响应，改用 llama.cpp",
    ),
    (
        re.compile(r"auto: the model was not deployed to Ollama"),
        lambda m: "auto：模型未部署到 Ollama，改用 llama.cpp",
    ),
    (
        re.compile(r"auto: Ollama at (\S+) failed the benchmark \((.*)\); llama.cpp on the same GGUF"),
        lambda m: (
            f"auto：{m.group(1)} 的 Ollama 基准测试失败（{verbatim(m.group(2))}），改用 llama.cpp 测同一个 GGUF"
        ),
    ),
    (
        re.compile(r"native llama-server: (\S+) \(built by the bootstrap\)"),
        lambda m: "llama.cpp 原生 llama-server：" + verbatim(m.group(1)) + "（由 bootstrap 构建）",
    ),
    (
        re.compile(r"native llama-server: (.+)"),
        lambda m: "llama.cpp 原生 llama-server：" + verbatim(m.group(1)),
    ),
    (
        re.compile(r"--server python: llama-cpp-python's server"),
        lambda m: "按参数 --server python 使用 llama-cpp-python 的服务器",
    ),
    (
        re.compile(r"llama-cpp-python's server \((.+)\)"),
        lambda m: "llama-cpp-python 的服务器（" + verbatim(m.group(1)) + "）",
    ),
    (
        re.compile(r"the model was not listed by /api/ps after the run"),
        lambda m: "测试结束后 /api/ps 中没有该模型",
    ),
    (
        re.compile(r"Ollama reports size_vram 0: the model runs on the CPU"),
        lambda m: "Ollama 报告 size_vram 为 0：模型在 CPU 上运行",
    ),
    (
        re.compile(r"the Ollama server is an outside process: not sampled; see ollama_size_bytes"),
        lambda m: "Ollama 服务器是外部进程，未采样；见 ollama_size_bytes",
    ),
    (re.compile(r"no Ollama at (\S+)"), lambda m: f"在 {m.group(1)} 没有可用的 Ollama 服务"),
    (re.compile(r"deployment failed"), lambda m: "部署失败"),
    (re.compile(r"no successful request"), lambda m: "没有成功的请求"),
    (re.compile(r"no request produced 2 or more tokens"), lambda m: "没有一个请求生成 2 个或更多 token"),
    (re.compile(r"all requests failed"), lambda m: "所有请求都失败了"),
    (re.compile(r"no requests were run"), lambda m: "没有运行任何请求"),
    (re.compile(r"not measured \(--no-roofline\)"), lambda m: "未测量（--no-roofline）"),
    (re.compile(r"interrupted \(Ctrl-C\)"), lambda m: "被中断（Ctrl-C）"),
    (
        re.compile(r"time budget of (\S+) s reached(?:: (\d+) request\(s\) not sent)?"),
        lambda m: f"达到 {m.group(1)} 秒的时间上限" + (f"，{m.group(2)} 个请求未发送" if m.group(2) else ""),
    ),
    (
        re.compile(r"the server process exited during the run(?:: (\d+) request\(s\) not sent)?"),
        lambda m: "推理服务器进程在测试中退出" + (f"，{m.group(1)} 个请求未发送" if m.group(1) else ""),
    ),
    (
        re.compile(r"evaluate\.identity_probe is empty"),
        lambda m: "evaluate.identity_probe 为空（未启用身份探针）",
    ),
    (
        re.compile(r"evaluate\.judge_model is empty \(off by default\)"),
        lambda m: "evaluate.judge_model 为空（默认不启用）",
    ),
]


def text(value: Any) -> str:
    """A stage's English reason in Chinese when it is a known one, else quoted as written ("" if empty)."""
    raw = " ".join(str(value if value is not None and not isinstance(value, NotMeasured) else "").split())
    if not raw:
        return ""
    for pattern, word in KNOWN:
        match = pattern.fullmatch(raw)
        if match:
            return word(match)
    # Text a stage (or a hand-made run folder) already wrote in Chinese is shown as it is.
    return raw if _CJK.search(raw) else verbatim(raw)


def reason(code: Any, english: Any = "") -> str:
    """A reason in Chinese: its code worded, else its English text (`text`); "" when there is neither."""
    if measured(code) and isinstance(code, Reason) and code.code in CODES:
        return CODES[code.code](dict(code.params or {}))
    return text(english)


def notes(codes: Any, english: list[str]) -> list[str]:
    """A stage's notes in Chinese: from `note_codes` when the stage wrote them, else quoted as written."""
    if measured(codes) and isinstance(codes, list) and len(codes) == len(english):
        return [reason(c, e) for c, e in zip(codes, english, strict=True)]
    return [text(e) for e in english]
