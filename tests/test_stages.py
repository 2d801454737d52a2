"""The stage registry (stages.py): every table the toolkit has of its stages comes from it.

A throwaway stage is registered here the way a new one would be (one entry in `stages.STAGES`, its
own module: this file) and, with nothing else changed, it becomes a command of run.py, runs through
the runner with its typed result and fingerprint, is skipped by `all` once current, and appears in
the report's stage table with its Chinese name and in 问题与改进 with its notes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

import run
import stages
from trainer.config import BenchmarkConfig, ReportConfig, TrainConfig, choices, load_config
from trainer.pipeline import Stage, is_current, run_all
from trainer.results import ABSENT, OptNum, StageResult
from trainer.runfolder import RunDir

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")


# ---- the throwaway stage: its module's entry point and result type ---------------------------------


@dataclass(kw_only=True)
class CountResult(StageResult):
    """count.json: how many data files the config lists."""

    data_files: OptNum = ABSENT


CALLS: list[str] = []


def count_files(cfg, run_dir) -> CountResult:
    CALLS.append(str(run_dir.path))
    n = len(cfg.data.files)
    return CountResult(data_files=n, headline=f"{n} data files", notes=["计数阶段的说明"])


COUNT = Stage(
    name="count",
    run=count_files,
    result=CountResult,
    sections=("data",),
    help="count the data files (a stage registered by a test)",
    name_zh="计数",
    summary_zh=lambda r: f"{r.data_files} 个数据文件",
)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Stage:
    """`count` registered just before the report, as a new stage would be."""
    *before, report = stages.STAGES
    monkeypatch.setattr(stages, "STAGES", (*before, COUNT, report))
    CALLS.clear()
    return COUNT


def test_a_registered_stage_is_a_command_that_runs_skips_and_is_reported(registered, tmp_path):
    run_dir = tmp_path / "run"
    common = ["--config", TINY, "--run-dir", str(run_dir)]

    help_text = run._parser(stages.STAGES).format_help()
    assert "count" in help_text and "registered by a test" in help_text

    assert run.main(["count", *common]) == 0
    record = json.loads((run_dir / "count.json").read_text(encoding="utf-8"))
    assert record["status"] == "completed"
    assert record["results"]["data_files"] == 2 and record["results"]["headline"] == "2 data files"
    assert len(CALLS) == 1

    # Current for this config, the runner skips it; its sections decide what "this config" is.
    cfg = load_config(TINY)
    (outcome,) = run_all([registered], cfg, RunDir(run_dir))
    assert outcome.status == "skipped" and len(CALLS) == 1
    assert not is_current(load_config(TINY, ["data.seed=7"]), RunDir(run_dir), registered)
    assert is_current(load_config(TINY, ["train.lora_r=4"]), RunDir(run_dir), registered)
    assert not is_current(cfg, RunDir(run_dir), dataclasses.replace(registered, sections=("data", "train")))

    assert run.main(["report", *common, "report.format=md"]) == 0
    report_md = (run_dir / "report.md").read_text(encoding="utf-8")
    row = next(line for line in report_md.splitlines() if "计数（count）" in line)
    assert "完成" in row and "2 个数据文件" in row
    assert "计数阶段记录：计数阶段的说明" in report_md
    assert "训练（train）" in report_md  # the stages that did not run are still listed
    assert len(CALLS) == 1  # the report read count.json; it did not run the stage


def test_stages_are_listed_once_in_pipeline_order():
    names = [s.name for s in stages.STAGES]
    assert names == ["prepare", "train", "evaluate", "export", "deploy", "benchmark", "report"]
    assert len(set(names)) == len(names)
    assert [s.name for s in stages.reported()] == names[:-1]
    assert all(stages.by_name(n).name == n for n in names)
    with pytest.raises(KeyError):
        stages.by_name("nope")


def test_choices_come_from_the_field_types():
    assert choices(TrainConfig, "backend") == ("auto", "unsloth", "peft")
    assert choices(BenchmarkConfig, "engine") == ("auto", "ollama", "llamacpp", "transformers")
    parser = run._parser(stages.STAGES)
    report_parser = parser._subparsers._group_actions[0].choices["report"]
    fmt = next(a for a in report_parser._actions if a.dest == "format")
    assert tuple(fmt.choices) == choices(ReportConfig, "format")
    with pytest.raises(TypeError):
        choices(TrainConfig, "lora_r")
