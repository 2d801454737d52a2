"""Report sections 项目概述, 附件, 各阶段运行情况 and 运行环境 (`python run.py report`).

Reads the stage records (`trainer.results.StageRecord`: status, start, duration, headline),
`train.json` for the method, `env.json` (`EnvInfo`) and `config.resolved.yaml` for what the run
was configured to do; checks which listed files exist in the run folder. Chinese labels are made here.
"""

from __future__ import annotations

from typing import Any

from reporting.runfiles import STATUS_ZH, RunFiles, Stage, inside
from reporting.text import (
    code,
    first_line,
    fmt_bytes,
    fmt_date,
    fmt_duration,
    fmt_int,
    fmt_time,
    is_number,
    shown,
    verbatim,
)
from trainer.config import ReportConfig
from trainer.results import (
    BenchmarkResult,
    DeployResult,
    EvaluateResult,
    ExportResult,
    NotMeasured,
    PrepareResult,
    ReportResult,
    TrainResult,
    known,
    measured,
    or_not_measured,
)


def project(run: RunFiles, report_cfg: ReportConfig) -> dict[str, Any]:
    """项目概述: base model, LoRA or QLoRA and the backend actually used, training date, git commit."""
    tr = run.train
    base = known(tr.value(tr.result.base_model), run.config_value("model", "name"))
    if tr.ok:
        method = (
            "QLoRA（4-bit NF4 量化基础模型 + LoRA 适配器）"
            if tr.result.quantization == "4-bit NF4"
            else "LoRA（基础模型不量化）"
        )
        method += f"，训练后端 {known(tr.result.backend, '未记录')}"
    else:
        wants_4bit = run.config_value("model", "load_in_4bit")
        planned = "QLoRA" if wants_4bit is True else "LoRA"
        method = f"{planned}（配置值；实际方法{shown(NotMeasured(tr.why_missing))}）"
    started = (
        or_not_measured(tr.started_at, "train.json 未记录 started_at")
        if tr.ok
        else NotMeasured(tr.why_missing)
    )
    return {
        "name": report_cfg.project_name,
        "base_model": shown(base),
        "method": method,
        "train_date": shown(started, fmt_date),
        "run_name": run.path.name,
        "git_commit": shown(run.env_value(run.env.git_commit)),
    }


def _attachment(run: RunFiles, label: str, rel: Any, stage: Stage[Any], extra: str = "") -> list[Any]:
    rel_text = str(rel)
    path = inside(run.path, rel_text)
    if path.is_dir():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        state = f"存在，{fmt_bytes(size)}"
        shown_path = rel_text.rstrip("/") + "/"
    elif path.is_file():
        state = f"存在，{fmt_bytes(path.stat().st_size)}"
        shown_path = rel_text
    else:
        state = "不存在" + ("" if stage.ok else f"（{stage.why_missing}）")
        shown_path = rel_text
    if extra and path.exists():
        state += f"，{extra}"
    return [label, code(shown_path), state]


def attachments(run: RunFiles) -> list[list[Any]]:
    """附件: each file the stages list (or would have written), whether it exists and its size."""
    tr, ev, ex, bm = run.train, run.evaluate, run.export, run.benchmark
    files = tr.result.files
    rows = [
        _attachment(run, "训练日志", known(files.log, "logs/training.log"), tr),
        _attachment(run, "Loss 日志", known(files.metrics, "logs/metrics.jsonl"), tr),
        _attachment(
            run,
            "评估结果",
            known(ev.result.csv, "evaluation_results.csv"),
            ev,
            f"{fmt_int(run.eval_rows)} 行" if run.eval_rows is not None else "",
        ),
        _attachment(run, "模型文件", known(ex.result.merged.path, "models/finetuned"), ex),
        _attachment(run, "LoRA 适配器", known(files.adapter, "adapter"), tr),
        _attachment(run, "TensorBoard日志", known(files.tensorboard, "runs"), tr),
    ]
    if ex.result.gguf.path:
        rows.append(_attachment(run, "GGUF 模型", ex.result.gguf.path, ex))
    if bm.result.files.csv:
        rows.append(_attachment(run, "基准测试明细", bm.result.files.csv, bm))
    for chart in bm.result.files.charts:
        rows.append(_attachment(run, "基准测试图表", chart, bm))
    return rows


def stage_rows(run: RunFiles) -> tuple[list[list[str]], str]:
    """各阶段运行情况: status, start, duration and the stage's own headline, plus the total time."""
    rows = []
    total = 0.0
    for st in run.stages.values():
        name, zh = st.name, st.name_zh
        status = STATUS_ZH.get(st.status, st.status)
        if st.status in ("failed", "interrupted") and st.error:
            status += f"：{verbatim(first_line(st.error, 80))}"
        duration = st.duration_s
        if duration is not None:
            total += duration
        # The stage's own headline is an English line for the terminal; the report says it in Chinese.
        summary = st.entry.summary_zh
        headline = summary(st.result) if st.ok and summary is not None else ""
        rows.append(
            [
                f"{zh}（{name}）",
                status,
                fmt_time(st.started_at) if st.started_at else "—",
                fmt_duration(duration) if duration is not None else "—",
                headline or "—",
            ]
        )
    return rows, fmt_duration(total)


def _count(value: Any) -> str:
    return fmt_int(value) if is_number(value) else "未记录"


# The 摘要 column of the stage table: one line of what a completed stage produced, from its result.
# stages.py names one of these (or its own) as each stage's `summary_zh`.


def prepare_summary(r: PrepareResult) -> str:
    s = r.splits
    return f"训练 {_count(s.train)} / 验证 {_count(s.val)} / 测试 {_count(s.test)} 条"


def train_summary(r: TrainResult) -> str:
    first, last = r.train_loss_first, r.train_loss_last
    loss = f"，训练 Loss {first:.3f} → {last:.3f}" if is_number(first) and is_number(last) else ""
    return f"{known(r.backend, '后端未记录')}/{known(r.precision, '精度未记录')}，{_count(r.global_step)} 步{loss}"


def evaluate_summary(r: EvaluateResult) -> str:
    return f"{len(r.metrics)} 项指标，{len(r.examples)} 个示例（见第 5 节）"


def export_summary(r: ExportResult) -> str:
    size = f"，{fmt_bytes(r.gguf.size_bytes)}" if is_number(r.gguf.size_bytes) else ""
    return f"{known(r.gguf.quantization, '')} GGUF{size}".strip()


def deploy_summary(r: DeployResult) -> str:
    return {"deployed": "已部署", "not_deployed": "未部署", "failed": "部署失败"}.get(
        str(r.status), "见第 6 节"
    )


def benchmark_summary(r: BenchmarkResult) -> str:
    return f"{known(r.engine, '引擎未记录')}，{len(r.summary)} 个并发级别（见第 7 节）"


def report_summary(r: ReportResult) -> str:
    pages = f"，PDF {r.pages} 页" if is_number(r.pages) and r.pages else ""
    return "、".join(str(v) for k, v in known(r.files, {}).items() if k != "assets") + pages


def environment(run: RunFiles) -> list[list[str]]:
    """运行环境: when, Python, platform, CPU, memory, GPU, git commit and library versions."""
    env = run.env
    gpu = env.gpu
    if measured(gpu):
        mem = fmt_bytes(gpu.memory_bytes) if is_number(gpu.memory_bytes) else "显存未记录"
        gpu_text = (
            f"{known(gpu.name, None)} × {known(gpu.count, None)}"
            f"（{mem}，计算能力 {known(gpu.capability, None)}）"
        )
    elif run.env_error:
        gpu_text = shown(NotMeasured(run.env_error))
    else:
        gpu_text = "无（env.json 中 gpu 为空：本次运行无GPU）"
    libs = known(env.libraries, {})
    lib_text = "，".join(f"{k} {v}" for k, v in libs.items() if v) or shown(run.env_value(env.libraries))
    return [
        ["记录时间", shown(run.env_value(env.created_at), fmt_time)],
        ["Python", shown(run.env_value(env.python))],
        ["平台", shown(run.env_value(env.platform))],
        ["CPU", shown(run.env_value(env.cpu_model)) + (f"（{env.cpu_count} 核）" if env.cpu_count else "")],
        ["内存", shown(run.env_value(env.memory_bytes), fmt_bytes)],
        ["GPU", gpu_text],
        ["代码版本（git）", shown(run.env_value(env.git_commit))],
        ["主要库版本", lib_text],
    ]
