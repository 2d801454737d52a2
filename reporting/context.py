"""The values of the report (`python run.py report`), one string per template slot.

Reads nothing itself: `build()` turns the loaded run folder (`reporting.runfiles.RunFiles`, whose
stage results are the typed `trainer.results` objects), the report settings of the current config
and the charts already drawn into the nested dict that `templates/report.md.j2` renders, one
section module (`reporting.sections.*`) per part of the report. Every slot is either a value from an
artifact, formatted with its unit, or `未测量：<reason>`; nothing is filled in by guesswork. Strings
are plain text (the template escapes them); `MdRaw` marks the few pieces of Markdown built here
(images, fenced blocks, code spans).
"""

from __future__ import annotations

from typing import Any

from reporting import facts, findings
from reporting.charts import Chart
from reporting.runfiles import RunFiles
from reporting.sections import data, deployment, evaluation, overview, resources, training
from trainer.config import ReportConfig
from trainer.results import measured


def build(
    run: RunFiles,
    report_cfg: ReportConfig,
    charts: dict[str, Chart | None],
    chart_reasons: dict[str, str],
    generated_at: str,
) -> dict[str, Any]:
    """The template context: one entry per report section."""
    assistant = run.config_value("data", "assistant_name")
    maker = run.config_value("data", "author")
    found = findings.findings(run)
    stage_rows, stage_total = overview.stage_rows(run)
    return {
        "project": overview.project(run, report_cfg),
        "dataset": data.dataset(run, report_cfg),
        "config": training.training_config(run),
        "training": training.training(run, charts, chart_reasons),
        "evaluation": evaluation.evaluation(
            run,
            str(assistant) if measured(assistant) else "（助手名称未记录）",
            str(maker) if measured(maker) else "（开发者名称未记录）",
        ),
        "deployment": deployment.deployment(run),
        "resources": resources.resources(run, charts, chart_reasons),
        "problems": [f.problem for f in found],
        "improvements": list(dict.fromkeys(f.improvement for f in found if f.improvement)),
        "conclusion": facts.conclusion(run),
        "attachments": overview.attachments(run),
        "stages": stage_rows,
        "stages_total": stage_total,
        "environment": overview.environment(run),
        "warnings": run.warnings,
        "generated_at": generated_at,
        "author": report_cfg.author,
    }
