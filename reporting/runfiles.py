"""The run folder as the report sees it (`python run.py report`): read-only access to its files.

Reads `config.resolved.yaml`, `env.json`, every `<stage>.json`, `logs/metrics.jsonl` and
`evaluation_results.csv` (its row count; `eval_items` reads its rows) (see docs/ARTIFACTS.md);
writes nothing. A missing or unreadable file, a stage that failed or never ran, and a `null` value
are all normal: every lookup (`Stage.value`, `RunFiles.config_value`, `RunFiles.env_value`) returns
the value or a `NotMeasured` whose `why` is worded for the report (in Chinese).
Stage files and env.json are read only through their types in `trainer.results` (the contract).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import yaml

from reporting import wording
from reporting.text import first_line, is_number, shorten, verbatim
from trainer.config import PipelineConfig, read_config
from trainer.pipeline import Stage as StageEntry
from trainer.results import (
    BenchmarkResult,
    DeployResult,
    EnvInfo,
    EvaluateResult,
    ExportResult,
    NotMeasured,
    PrepareResult,
    ResultError,
    StageRecord,
    StageResult,
    TrainResult,
    known,
    load_env,
    load_result,
    measured,
)
from trainer.runfolder import RunDir

R = TypeVar("R", bound=StageResult)
T = TypeVar("T")

STATUS_ZH = {
    "completed": "完成",
    "failed": "失败",
    "interrupted": "中断",
    "running": "未完成",
    "missing": "未运行",
}


@dataclass
class Stage(Generic[R]):
    """One `<stage>.json` (typed by its stage's result type), possibly absent, unreadable or not
    completed."""

    entry: StageEntry  # the stage as `stages.py` lists it
    record: StageRecord | None
    file_error: str = ""

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def name_zh(self) -> str:
        return self.entry.name_zh

    @property
    def status(self) -> str:
        if self.record is None:
            return "missing"
        return str(known(self.record.status, "") or "running")

    @property
    def ok(self) -> bool:
        """Whether the stage completed (a word for the stage, not a value: ask `measured` of those)."""
        return self.status == "completed"

    @property
    def result(self) -> R:
        """The typed result; for a stage that did not complete, a NotMeasured that reads as empty."""
        if not self.ok or self.record is None:
            return cast(R, NotMeasured(self.why_missing))
        results = self.record.results
        if isinstance(results, StageResult):
            return cast(R, results)
        return cast(R, self.entry.result())  # `results` missing or not an object: nothing recorded

    @property
    def error(self) -> str:
        error = self.record.error if self.record is not None else ""
        return first_line(known(error, "") or "", 200)

    @property
    def why_missing(self) -> str:
        """Why this stage's values are missing (the stage did not complete, or its file is unreadable):
        the `why` of every value `self.value` gives for it."""
        if self.file_error:
            return f"{self.name}.json 无法读取（{verbatim(self.file_error)}）"
        status = self.status
        if status == "missing":
            return f"{self.name_zh}阶段未运行（{self.name}.json 不存在）"
        if status == "failed":
            return f"{self.name_zh}阶段失败（{verbatim(self.error) or '未记录错误信息'}）"
        if status == "interrupted":
            return f"{self.name_zh}阶段被中断"
        if status == "running":
            return f"{self.name_zh}阶段未完成（{self.name}.json 状态为 running，进程可能被终止）"
        return f"{self.name_zh}阶段状态为 {status}"

    def value(self, value: Any) -> Any:
        """A typed field of this stage's result, or a `NotMeasured` whose `why` is worded for the report.

        The reason is the stage's own (`*_reason` beside a null), else says the key is not recorded
        or empty; for a stage that did not complete it is the stage's.
        """
        if not self.ok:
            return NotMeasured(self.why_missing)
        if value is None:
            return NotMeasured(f"{self.name}.json 中的值为空，未说明原因")
        if not isinstance(value, NotMeasured):
            return value
        if value.absent:
            return NotMeasured(f"{self.name}.json 未记录 {value.key_path}")
        if value.why.strip():
            return NotMeasured(wording.text(shorten(" ".join(value.why.split()), 300)))
        return NotMeasured(f"{self.name}.json 中 {value.key_path} 为空，未说明原因")

    @property
    def duration_s(self) -> float | None:
        value = self.record.duration_s if self.record is not None else None
        return float(value) if is_number(value) else None

    @property
    def started_at(self) -> str | None:
        value = self.record.started_at if self.record is not None else None
        return value if measured(value) else None

    @property
    def notes(self) -> list[str]:
        return [str(n) for n in self.result.notes if str(n).strip()] if self.ok else []


@dataclass
class RunFiles:
    """Everything the report reads, loaded once."""

    path: Path
    config: PipelineConfig  # config.resolved.yaml read back through the dataclasses
    config_recorded: frozenset[str]  # which of its fields the file holds ("section.key")
    config_error: str
    env: EnvInfo
    env_error: str
    stages: dict[str, Stage[Any]]
    metrics: list[dict[str, Any]]
    metrics_error: str
    eval_rows: int | None
    eval_csv_error: str
    warnings: list[str] = field(default_factory=list)

    @property
    def prepare(self) -> Stage[PrepareResult]:
        return self.stages["prepare"]

    @property
    def train(self) -> Stage[TrainResult]:
        return self.stages["train"]

    @property
    def evaluate(self) -> Stage[EvaluateResult]:
        return self.stages["evaluate"]

    @property
    def export(self) -> Stage[ExportResult]:
        return self.stages["export"]

    @property
    def deploy(self) -> Stage[DeployResult]:
        return self.stages["deploy"]

    @property
    def benchmark(self) -> Stage[BenchmarkResult]:
        return self.stages["benchmark"]

    def stage(self, name: str) -> Stage[Any]:
        return self.stages[name]

    def config_value(self, section: str, key: str) -> Any:
        """A field of the run's typed config (`run.config`), or a `NotMeasured` saying why the run's
        config.resolved.yaml does not say it."""
        if self.config_error:
            return NotMeasured(self.config_error)
        if f"{section}.{key}" not in self.config_recorded:
            return NotMeasured(f"config.resolved.yaml 未记录 {section}.{key}")
        value = getattr(getattr(self.config, section), key)
        return value if value is not None else NotMeasured(f"config.resolved.yaml 中 {section}.{key} 为空")

    def env_value(self, value: Any) -> Any:
        """A field of env.json, or a `NotMeasured` worded for the report (e.g. `run.env_value(run.env.python)`)."""
        if self.env_error:
            return NotMeasured(self.env_error)
        if value is None:
            return NotMeasured("env.json 中的值为空")
        if not isinstance(value, NotMeasured):
            return value
        if value.absent:
            return NotMeasured(f"env.json 未记录 {value.key_path}")
        return NotMeasured(f"env.json 中 {value.key_path} 为空")

    @property
    def has_gpu(self) -> bool | None:
        """Whether env.json records a GPU; None when env.json could not be read."""
        return None if self.env_error else measured(self.env.gpu)


def _read_typed(read: Callable[[], T | None]) -> tuple[T | None, str]:
    """A typed run folder file, or the reason it could not be read (None, "" when it is absent)."""
    try:
        return read(), ""
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ResultError) as exc:
        return None, f"{type(exc).__name__}: {first_line(str(exc), 120)}"


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], str]:
    if not path.exists():
        return [], "logs/metrics.jsonl 不存在"
    rows: list[dict[str, Any]] = []
    bad = 0
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1  # a line cut short by a killed process: skip it, count it
                    continue
                if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
                    rows.append(row)
    except (OSError, UnicodeDecodeError) as exc:
        return [], f"logs/metrics.jsonl 无法读取（{type(exc).__name__}）"
    return rows, (f"logs/metrics.jsonl 有 {bad} 行无法解析，已跳过" if bad else "")


def _count_csv_rows(path: Path) -> tuple[int | None, str]:
    if not path.exists():
        return None, "evaluation_results.csv 不存在"
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            next(reader, None)  # header
            return sum(1 for _ in reader), ""
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return None, f"evaluation_results.csv 无法读取（{type(exc).__name__}）"


def eval_items(run: RunFiles) -> tuple[list[dict[str, str]], str]:
    """The rows of the run's evaluation_results.csv (one per test item, every value as text), or
    why they could not be read."""
    csv_file = known(run.evaluate.result.csv, "evaluation_results.csv")
    path = inside(run.path, csv_file)
    if not path.exists():
        return [], f"{csv_file} 不存在"
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return [dict(row) for row in csv.DictReader(fh)], ""
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return [], f"{csv_file} 无法读取（{type(exc).__name__}）"


def inside(base: Path, relative: Any) -> Path:
    """`base / relative`, refusing paths that leave the run folder (a copied folder stays self-contained)."""
    path = (base / str(relative)).resolve()
    return path if path.is_relative_to(base.resolve()) else base / "__outside_run_folder__"


def load(run_dir: RunDir, stages: Sequence[StageEntry]) -> RunFiles:
    """Read the run folder: the `<stage>.json` of each of `stages` (those before the report, as
    `stages.py` lists them) and the files around them. Never raises for a missing or broken file:
    it records why instead."""
    base = run_dir.path
    warnings: list[str] = []

    config = read_config({})
    config_error = ""
    config_path = base / "config.resolved.yaml"
    if not config_path.exists():
        config_error = "config.resolved.yaml 不存在"
    else:
        try:
            config = read_config(yaml.safe_load(config_path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            config_error = f"config.resolved.yaml 无法读取（{type(exc).__name__}）"
    if config_error:
        warnings.append(config_error)
    warnings += [f"config.resolved.yaml 中的值不符合配置类型：{p}" for p in config.problems]

    env, env_error = _read_typed(lambda: load_env(base))
    if env_error:
        env_error = f"env.json 无法读取（{env_error}）"
    elif env is None:
        env_error = "env.json 不存在"
    if env_error:
        warnings.append(env_error)

    read: dict[str, Stage[Any]] = {}
    for entry in stages:
        record, error = _read_typed(lambda e=entry: load_result(base, e.name, e.result))
        if error:
            warnings.append(f"{entry.name}.json 无法读取：{error}")
        read[entry.name] = Stage(entry, record, error)

    metrics_file = known(read["train"].result.files.metrics, "logs/metrics.jsonl")
    metrics, metrics_error = _read_metrics(inside(base, metrics_file))
    csv_file = known(read["evaluate"].result.csv, "evaluation_results.csv")
    eval_rows, eval_csv_error = _count_csv_rows(inside(base, csv_file))
    return RunFiles(
        path=base,
        config=config.config,
        config_recorded=config.recorded,
        config_error=config_error,
        env=env or EnvInfo(),
        env_error=env_error,
        stages=read,
        metrics=metrics,
        metrics_error=metrics_error,
        eval_rows=eval_rows,
        eval_csv_error=eval_csv_error,
        warnings=warnings,
    )
