"""The run folder as the report sees it (`python run.py report`): read-only access to its files.

Reads `config.resolved.yaml`, `env.json`, every `<stage>.json`, `logs/metrics.jsonl` and
`evaluation_results.csv` (see docs/ARTIFACTS.md); writes nothing. A missing or unreadable file, a
stage that failed or never ran, and a `null` value are all normal: every lookup returns a
`Measured` that carries either the value or the reason it is missing, worded for the report.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reporting.text import NOT_MEASURED, first_line, shorten
from trainer.runfolder import RunDir

# Pipeline order and the Chinese name of each stage (the report's own stage is not listed).
STAGE_NAMES_ZH: dict[str, str] = {
    "prepare": "数据准备",
    "train": "训练",
    "evaluate": "评估",
    "export": "导出",
    "deploy": "部署",
    "benchmark": "基准测试",
}

STATUS_ZH = {
    "completed": "完成",
    "failed": "失败",
    "interrupted": "中断",
    "running": "未完成",
    "missing": "未运行",
}


@dataclass(frozen=True)
class Measured:
    """A value from an artifact, or `None` with the reason it was not measured."""

    value: Any
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.value is not None

    def text(self, fmt: Any = str) -> str:
        return fmt(self.value) if self.ok else f"{NOT_MEASURED}{self.reason}"

    def or_else(self, other: Measured) -> Measured:
        return self if self.ok else other


def missing(reason: str) -> Measured:
    return Measured(None, reason)


@dataclass
class Stage:
    """One `<stage>.json`, possibly absent or not completed."""

    name: str
    record: dict[str, Any] | None
    file_error: str = ""

    @property
    def name_zh(self) -> str:
        return STAGE_NAMES_ZH.get(self.name, self.name)

    @property
    def status(self) -> str:
        if self.record is None:
            return "missing"
        return str(self.record.get("status") or "running")

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def results(self) -> dict[str, Any]:
        results = (self.record or {}).get("results") if self.ok else None
        return results if isinstance(results, dict) else {}

    @property
    def error(self) -> str:
        return first_line((self.record or {}).get("error") or "", 200)

    @property
    def why_missing(self) -> str:
        """Why this stage's values are not available, for a 未测量 line."""
        if self.file_error:
            return f"{self.name}.json 无法读取（{self.file_error}）"
        status = self.status
        if status == "missing":
            return f"{self.name_zh}阶段未运行（{self.name}.json 不存在）"
        if status == "failed":
            return f"{self.name_zh}阶段失败（{self.error or '未记录错误信息'}）"
        if status == "interrupted":
            return f"{self.name_zh}阶段被中断"
        if status == "running":
            return f"{self.name_zh}阶段未完成（{self.name}.json 状态为 running，进程可能被终止）"
        return f"{self.name_zh}阶段状态为 {status}"

    def get(self, *path: str, reason_key: str | None = None) -> Measured:
        """`results[path...]`, or the reason it is missing (the stage's, or the `*_reason` beside it).

        A null value looks for its reason in the same object: `reason_key` if given, then
        `<key>_reason`, the same without a unit suffix (`vram_bytes` -> `vram_reason`), and `reason`.
        """
        if not self.ok:
            return missing(self.why_missing)
        node: Any = self.results
        parent: dict[str, Any] = node
        dotted = ".".join(path)
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return missing(f"{self.name}.json 未记录 {dotted}")
            parent, node = node, node[key]
        if node is None:
            last = path[-1]
            stem = re.sub(r"_(bytes|s|ms|ns|pct|per_s)$", "", last)
            for candidate in (reason_key, f"{last}_reason", f"{stem}_reason", "reason"):
                if candidate and isinstance(parent.get(candidate), str) and parent[candidate].strip():
                    return missing(shorten(" ".join(parent[candidate].split()), 300))
            return missing(f"{self.name}.json 中 {dotted} 为空，未说明原因")
        return Measured(node)

    def raw(self, *path: str, default: Any = None) -> Any:
        """The value at `path` or `default` (for rules that only need to know what is there)."""
        node: Any = self.results
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return default if node is None else node

    @property
    def duration_s(self) -> float | None:
        value = (self.record or {}).get("duration_s")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def started_at(self) -> str | None:
        return (self.record or {}).get("started_at")

    @property
    def notes(self) -> list[str]:
        return [str(n) for n in self.results.get("notes") or [] if str(n).strip()]


@dataclass
class RunFiles:
    """Everything the report reads, loaded once."""

    path: Path
    config: dict[str, Any]
    config_error: str
    env: dict[str, Any]
    env_error: str
    stages: dict[str, Stage]
    metrics: list[dict[str, Any]]
    metrics_error: str
    eval_rows: int | None
    eval_csv_error: str
    warnings: list[str] = field(default_factory=list)

    def stage(self, name: str) -> Stage:
        return self.stages[name]

    def config_value(self, section: str, key: str) -> Measured:
        if self.config_error:
            return missing(self.config_error)
        sec = self.config.get(section)
        if not isinstance(sec, dict) or key not in sec or sec[key] is None:
            return missing(f"config.resolved.yaml 未记录 {section}.{key}")
        return Measured(sec[key])

    def env_value(self, key: str) -> Measured:
        if self.env_error:
            return missing(self.env_error)
        if key not in self.env:
            return missing(f"env.json 未记录 {key}")
        if self.env[key] is None:
            return missing(f"env.json 中 {key} 为空")
        return Measured(self.env[key])


def _read_json_file(path: Path) -> tuple[Any, str]:
    if not path.exists():
        return None, ""
    try:
        return json.loads(path.read_text(encoding="utf-8")), ""
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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


def inside(base: Path, relative: Any) -> Path:
    """`base / relative`, refusing paths that leave the run folder (a copied folder stays self-contained)."""
    path = (base / str(relative)).resolve()
    return path if path.is_relative_to(base.resolve()) else base / "__outside_run_folder__"


def load(run_dir: RunDir) -> RunFiles:
    """Read the run folder. Never raises for a missing or broken file: it records why instead."""
    base = run_dir.path
    warnings: list[str] = []

    config: dict[str, Any] = {}
    config_error = ""
    config_path = base / "config.resolved.yaml"
    if not config_path.exists():
        config_error = "config.resolved.yaml 不存在"
    else:
        try:
            loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) else {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            config_error = f"config.resolved.yaml 无法读取（{type(exc).__name__}）"
    if config_error:
        warnings.append(config_error)

    env, env_error = _read_json_file(base / "env.json")
    if env_error:
        env_error = f"env.json 无法读取（{env_error}）"
    elif env is None:
        env_error = "env.json 不存在"
    if not isinstance(env, dict):
        env = {}
    if env_error:
        warnings.append(env_error)

    stages = {}
    for name in STAGE_NAMES_ZH:
        record, error = _read_json_file(base / f"{name}.json")
        if error:
            warnings.append(f"{name}.json 无法读取：{error}")
        stages[name] = Stage(name, record if isinstance(record, dict) else None, error)

    metrics_file = stages["train"].raw("files", "metrics", default="logs/metrics.jsonl")
    metrics, metrics_error = _read_metrics(inside(base, metrics_file))
    csv_file = stages["evaluate"].raw("csv", default="evaluation_results.csv")
    eval_rows, eval_csv_error = _count_csv_rows(inside(base, csv_file))
    return RunFiles(
        path=base,
        config=config,
        config_error=config_error,
        env=env,
        env_error=env_error,
        stages=stages,
        metrics=metrics,
        metrics_error=metrics_error,
        eval_rows=eval_rows,
        eval_csv_error=eval_csv_error,
        warnings=warnings,
    )
