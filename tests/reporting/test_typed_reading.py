"""The report reads stage files only through their types (trainer/results): shapes, unknown keys, nulls.

Markdown only (no PDF): each test writes a fake run folder (tests/fake_run.py), edits one stage file
as JSON (shapes the types cannot make) and renders report.md in-process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reporting import report, runfiles
from reporting.text import shown
from stages import reported
from tests import fake_run
from trainer.config import load_config
from trainer.results import NotMeasured
from trainer.runfolder import RunDir


def _edit(path: Path, stage: str, fn: Callable[[dict[str, Any]], None]) -> None:
    record = json.loads((path / f"{stage}.json").read_text(encoding="utf-8"))
    fn(record["results"])
    (path / f"{stage}.json").write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")


def _markdown(path: Path) -> str:
    files = runfiles.load(RunDir(path), reported())
    cfg = load_config(None, ["report.format=md"])
    drawn, reasons = report._draw_charts(files, RunDir(path))
    return report.render_markdown(files, cfg.report, drawn, reasons, generated_at="2025-11-28 10:00:00")


def test_a_stage_file_of_the_wrong_shape_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    path = fake_run.complete_run().write(tmp_path / "run")
    _edit(path, "train", lambda r: r.update(checkpoints=[5]))
    md = _markdown(path)
    assert "train.json 无法读取（`ResultError: checkpoints[0]: expected an object, got int`）" in md
    assert runfiles.load(RunDir(path), reported()).warnings == [
        "train.json 无法读取：ResultError: checkpoints[0]: expected an object, got int"
    ]


def test_keys_the_contract_does_not_name_change_nothing(tmp_path: Path) -> None:
    plain = _markdown(fake_run.complete_run().write(tmp_path / "plain"))
    path = fake_run.complete_run().write(tmp_path / "extra")
    for stage in tuple(s.name for s in reported()):
        _edit(path, stage, lambda r: r.update(added_by_a_newer_stage={"x": 1}))
    _edit(path, "train", lambda r: r["resources"].update(new_counter=3))
    assert _markdown(path).replace("extra", "plain") == plain


def test_a_null_shows_the_reason_written_beside_it(tmp_path: Path) -> None:
    path = fake_run.complete_run().write(tmp_path / "run")

    def no_vram(r: dict[str, Any]) -> None:
        r["memory"].update(vram_bytes=None, vram_reason="ollama ps 未报告显存")

    _edit(path, "benchmark", no_vram)
    _edit(path, "train", lambda r: r.pop("global_step"))
    md = _markdown(path)
    assert "未测量：ollama ps 未报告显存" in md
    assert "未测量：train.json 未记录 global_step" in md


def test_shown_is_the_value_or_its_reason() -> None:
    assert shown(0) == "0"
    assert shown(0.5, lambda v: f"{v:.2f} 秒") == "0.50 秒"
    assert shown("") == ""  # a measured empty text is shown as it is, not as 未测量
    assert shown(NotMeasured("训练阶段未运行")) == "未测量：训练阶段未运行"
    assert shown(NotMeasured("没有 GPU"), lambda v: f"{v} 字节") == "未测量：没有 GPU"
    with pytest.raises(ValueError, match="NotMeasured"):
        shown(None)  # a None carries no reason: the report never shows one


def test_a_stage_value_is_the_value_or_a_reason_worded_for_the_report(tmp_path: Path) -> None:
    files = runfiles.load(RunDir(fake_run.gpu_less_run().write(tmp_path / "run")), reported())
    train = files.train
    assert train.value(train.result.backend) == train.result.backend  # a value comes back as it is
    reserved = train.value(train.result.resources.peak_gpu_reserved_bytes)
    assert isinstance(reserved, NotMeasured) and reserved.why  # the stage's own reason, worded
    absent = train.value(NotMeasured(absent=True, key_path="resources.gpu_utilization"))
    assert absent == NotMeasured("train.json 未记录 resources.gpu_utilization")
    assert files.config_value("train", "backend") == files.config.train.backend
    nothing = runfiles.load(RunDir(fake_run.empty_run().write(tmp_path / "empty")), reported())
    assert nothing.train.value(nothing.train.result.backend) == NotMeasured(nothing.train.why_missing)


@pytest.mark.parametrize(
    ("reason", "fallback"),
    [("probe_faster", False), ("unsloth_unavailable", True), ("probe_other_failed", True)],
)
def test_a_backend_auto_measured_faster_is_not_reported_as_a_fallback(tmp_path, reason, fallback):
    """`auto` taking PEFT because its probe measured it faster is a choice; only a backend that could
    not train (Unsloth missing, its probe failed) is a fallback in 问题与改进."""
    from reporting.findings import findings
    from trainer.results import BackendChoice, BackendProbe, ProbeRun

    run = fake_run.complete_run()
    run.overrides.append("train.backend=auto")
    path = run.write(tmp_path / "run")
    probe = BackendProbe(
        steps=3,
        cached=False,
        cost_s=72.5,
        runs=[ProbeRun(backend="unsloth", tokens_per_s=406.6), ProbeRun(backend="peft", tokens_per_s=496.2)],
    )

    def chose_peft(result):
        result.backend = "peft"
        result.backend_reason = f"train.backend=auto: peft ({reason})"
        result.backend_choice = BackendChoice(backend="peft", reason=reason, detail="why", probe=probe)

    fake_run.edit(path, "train", chose_peft)
    problems = [f.problem for f in findings(runfiles.load(RunDir(path), reported()))]
    said = [p for p in problems if "训练后端回退" in p]
    assert bool(said) is fallback, problems
    assert all("train.backend=auto: peft" not in p for p in said)  # worded in Chinese, not quoted
