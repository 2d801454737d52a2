"""The stages of `python run.py`, in pipeline order: the one list the toolkit has of them.

Each entry names a stage's entry point, its result type, the config sections that decide its
result, its `--help` line, its Chinese name and its line in the report's stage table, by direct
reference (an editor follows
`run.py train` into `trainer.train.run` from here). Everything else is derived from this list: the
commands of run.py, the runner's order (trainer/pipeline.py), which `<stage>.json` files the report
reads and how it decodes them, its stage table. Adding a stage means adding its module and one
entry here.

It sits above the packages it names (trainer, benchmarks, reporting); nothing in them imports it.
The report is the one stage that reads the others, so it is given this list (`_report`).
"""

from __future__ import annotations

from benchmarks import pipeline as benchmark
from reporting import report
from reporting.sections import overview
from trainer import deploy, evaluate, export, prepare_data, train
from trainer.config import PipelineConfig
from trainer.pipeline import Stage
from trainer.results import (
    BenchmarkResult,
    DeployResult,
    EvaluateResult,
    ExportResult,
    PrepareResult,
    ReportResult,
    TrainResult,
)
from trainer.runfolder import RunDir


def _report(cfg: PipelineConfig, run_dir: RunDir) -> ReportResult:
    """The report stage reads the files of every stage before it."""
    return report.run(cfg, run_dir, reported())


STAGES: tuple[Stage, ...] = (
    Stage(
        name="prepare",
        run=prepare_data.run,
        result=PrepareResult,
        sections=("model", "data"),
        help="validate, clean, dedupe and split Alpaca data; apply the chat format",
        name_zh="数据准备",
        summary_zh=overview.prepare_summary,
    ),
    Stage(
        name="train",
        run=train.run,
        result=TrainResult,
        sections=("model", "data", "train"),
        help="LoRA/QLoRA fine-tuning with TRL SFTTrainer (Unsloth or PEFT backend)",
        name_zh="训练",
        reset=train.reset,
        summary_zh=overview.train_summary,
    ),
    Stage(
        name="evaluate",
        run=evaluate.run,
        result=EvaluateResult,
        sections=("model", "data", "train", "evaluate"),
        help="before/after answers on the test split with Chinese metrics",
        name_zh="评估",
        summary_zh=overview.evaluate_summary,
    ),
    Stage(
        name="export",
        run=export.run,
        result=ExportResult,
        sections=("model", "data", "train", "export"),
        help="merge the adapter, convert to GGUF, quantize (Q4_K_M) with llama.cpp",
        name_zh="导出",
        summary_zh=overview.export_summary,
    ),
    Stage(
        name="deploy",
        run=deploy.run,
        result=DeployResult,
        sections=("model", "data", "train", "export", "deploy"),
        help="create the Ollama model from the GGUF and test its API",
        name_zh="部署",
        summary_zh=overview.deploy_summary,
    ),
    Stage(
        name="benchmark",
        run=benchmark.run,
        result=BenchmarkResult,
        sections=("model", "data", "train", "export", "deploy", "benchmark"),
        help="VRAM, tokens/s and latency through Ollama or llama.cpp",
        name_zh="基准测试",
        summary_zh=overview.benchmark_summary,
    ),
    Stage(
        name="report",
        run=_report,
        result=ReportResult,
        sections=(
            "run_name",
            "model",
            "data",
            "train",
            "evaluate",
            "export",
            "deploy",
            "benchmark",
            "report",
        ),
        help="the Chinese training report, Markdown and PDF, from the run's files",
        name_zh="报告",
        summary_zh=overview.report_summary,
    ),
)


def by_name(name: str) -> Stage:
    """The stage called `name` (KeyError for a name that is not listed)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(name)


def reported() -> tuple[Stage, ...]:
    """The stages whose files a report reads (`run.py report`, `run.py compare`): all but the report."""
    return tuple(stage for stage in STAGES if stage.run is not _report)
