"""`python run.py compare RUN_DIR RUN_DIR [...] [--out DIR] [--format md|pdf|both]`: one Chinese
report that compares finished runs.

Reads only the run folders' files, through the report's readers (`reporting.runfiles`: every
`<stage>.json` through its type, `config.resolved.yaml`, `logs/metrics.jsonl`,
`evaluation_results.csv`); never re-runs anything, so it works on copied run folders too. Every run
must have a completed evaluate stage: anything else is refused, all problems at once, before a file
is written. Writes into its own folder, atomically:

- `comparison_assets/compare_loss_curves.png`: the runs' training and validation loss overlaid;
- `comparison.md`: templates/compare.md.j2 (configuration differences, the metric table side by side
  with each run's change and interval, training, speed and resources, serving, the verdict);
- `comparison.pdf`: the same Markdown through the run report's HTML/PDF rendering and glyph check;
- `comparison.json`: the verdict as data (best run on the primary metric and by validation loss,
  each paired difference with its interval).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reporting import charts, comparison, report, runfiles
from reporting.sections import comparison as sections
from reporting.text import image
from trainer.config import ReportConfig
from trainer.errors import UserError, problem_list
from trainer.pipeline import Stage
from trainer.results import measured
from trainer.runfolder import RunDir, now_iso, write_json, write_text

TITLE = "微调运行对比报告"
ASSETS = "comparison_assets"


@dataclass
class CompareResult:
    """What `compare` wrote and decided (also written as comparison.json)."""

    out_dir: str
    runs: list[str]
    files: dict[str, str]
    pages: int
    best_by_primary: str | None
    best_by_val_loss: str | None
    pairs: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_run_dirs(paths: list[Path], stages: Sequence[Stage]) -> list[runfiles.RunFiles]:
    """Load every run folder (the files of `stages`), or raise one UserError that lists every
    problem (nothing is written)."""
    problems: list[str] = []
    loaded: list[runfiles.RunFiles] = []
    seen: set[Path] = set()
    for path in paths:
        if not path.is_dir():
            problems.append(f"{path}: no such folder")
            continue
        if path.resolve() in seen:
            problems.append(f"{path}: given twice")
            continue
        seen.add(path.resolve())
        if not (path / "config.resolved.yaml").exists() and not list(path.glob("*.json")):
            problems.append(f"{path}: not a run folder (no config.resolved.yaml and no <stage>.json)")
            continue
        files = runfiles.load(RunDir(path), stages)
        ev = files.evaluate
        if not ev.ok:
            state = "evaluate.json does not exist" if ev.status == "missing" else f"evaluate is {ev.status}"
            problems.append(f"{path}: a run without a completed evaluate stage ({state})")
            continue
        loaded.append(files)
    if len(paths) < 2:
        problems.append(f"{len(paths)} run folder given: compare needs at least two")
    if problems:
        raise UserError(
            problem_list("compare", problems),
            fix="pass run folders (outputs/<run_name>) whose evaluate stage completed, e.g. "
            "`python run.py evaluate --run-dir DIR` first",
        )
    return loaded


def _report_config(runs: list[comparison.Run]) -> ReportConfig:
    """The first run's report settings (project name and author in the PDF's header and metadata)."""
    cfg = ReportConfig()
    for key in ("project_name", "author"):
        value = runs[0].files.config_value("report", key)
        if measured(value):
            setattr(cfg, key, value)
    return cfg


def _context(runs: list[comparison.Run], pairs: list[comparison.PairedDifference], out_dir: Path) -> dict:
    chart = charts.loss_overlay_chart([(r.label, r.files.metrics) for r in runs], out_dir / ASSETS)
    metric_rows, metric_notes = sections.metric_table(runs)
    training_rows, training_notes = sections.training_rows(runs)
    speed_rows, speed_notes = sections.speed_rows(runs)
    serving_rows, serving_notes = sections.serving_rows(runs)
    return {
        "project": _report_config(runs).project_name,
        "generated_at": now_iso()[:19].replace("T", " "),
        "labels": [r.label for r in runs],
        "warnings": sections.warnings(runs),
        "verdict": sections.verdict(runs, pairs),
        "method": (
            f"判断方法：在相同测试项上，对最佳运行与其他运行逐条 ROUGE-L 之差做配对自助法（{comparison.RESAMPLES} "
            f"次重采样，随机种子 {comparison.SEED}），95% 区间不含 0 才认为差异显著；测试项不同的运行不判断显著性。"
        ),
        "runs": sections.runs_table(runs),
        "config_rows": sections.config_rows(runs),
        "metric_rows": metric_rows,
        "metric_notes": metric_notes,
        "loss_chart": image(f"{ASSETS}/{chart.file}", chart.caption) if chart else "",
        "loss_chart_missing": ""
        if chart
        else "未测量：没有任何运行的 logs/metrics.jsonl 记录 loss 或 eval_loss",
        "training_rows": training_rows,
        "training_notes": training_notes,
        "speed_rows": speed_rows,
        "speed_notes": speed_notes,
        "serving_rows": serving_rows,
        "serving_notes": serving_notes,
    }


def run(paths: list[Path], out_dir: Path, stages: Sequence[Stage], fmt: str = "both") -> CompareResult:
    """Check the run folders, then write the comparison report into `out_dir`; `stages` are the
    stages whose files are read (those before the report, as `stages.py` lists them)."""
    runs = comparison.load_runs(check_run_dirs([Path(p) for p in paths], stages))
    best = comparison.best_by_primary(runs)
    pairs = [comparison.paired_difference(best, r) for r in runs if best is not None and r is not best]
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = _context(runs, pairs, out_dir)
    markdown = report.markdown_environment(report.TEMPLATES).get_template("compare.md.j2").render(**ctx)
    written: dict[str, str] = {}
    if fmt in ("md", "both"):
        write_text(out_dir / "comparison.md", markdown)
        written["md"] = "comparison.md"
    pages = 0
    if fmt in ("pdf", "both"):
        pdf = report.write_pdf(
            markdown, _report_config(runs), out_dir / "comparison.pdf", out_dir, title=TITLE
        )
        pages = pdf.pages
        written["pdf"] = "comparison.pdf"
    by_loss = comparison.best_by_val_loss(runs)
    result = CompareResult(
        out_dir=str(out_dir),
        runs=[str(r.files.path) for r in runs],
        files=written,
        pages=pages,
        best_by_primary=best.label if best else None,
        best_by_val_loss=by_loss.label if by_loss else None,
        pairs=[{**asdict(p), "significant": p.significant} for p in pairs],
        warnings=ctx["warnings"],
    )
    write_json(out_dir / "comparison.json", asdict(result))
    return result
