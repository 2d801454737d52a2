"""The `report` stage: `python run.py report [--run-dir DIR] [--format md|pdf|both]`.

Reads only the run folder: `config.resolved.yaml`, `env.json`, every `<stage>.json`,
`logs/metrics.jsonl` and `evaluation_results.csv` (docs/ARTIFACTS.md). It never re-runs a stage,
so it also works on a copied run folder. Writes, atomically:

- `report_assets/report_*.png`: loss curve and, unless the benchmark stage left its own
  `report_assets/benchmark_*.png` (embedded as they are), latency and tokens/s charts;
- `report.md`: templates/report.md.j2 rendered with Jinja2 (StrictUndefined, every value
  Markdown-escaped);
- `report.pdf`: that same Markdown as HTML (markdown-it-py, raw HTML off) styled by
  templates/report.css and laid out by WeasyPrint with Noto Sans CJK SC. A glyph missing from every
  font (WeasyPrint's ".notdef glyph rendered" warning) is an error: such characters are replaced by
  their code point (U+XXXX) and the PDF is laid out again, so tofu never ships.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from reporting import charts, context, runfiles
from reporting.text import escape_md, plain
from trainer.config import PipelineConfig, ReportConfig
from trainer.pipeline import Stage
from trainer.results import BenchmarkResult, ReportResult, measured
from trainer.runfolder import ROOT, RunDir, atomic_path, now_iso, write_text

TEMPLATES = ROOT / "templates"
ASSETS = "report_assets"
NOTDEF = ".notdef glyph rendered"
NOWRAP_CHARS = 6
REPORT_TITLE = "模型微调训练报告"  # the page header; the comparison report (reporting/compare.py) has its own


class MissingGlyphs(RuntimeError):
    """Characters that no installed font can draw; the PDF would show boxes for them."""

    def __init__(self, chars: list[str]) -> None:
        self.chars = chars
        shown = ", ".join(f"U+{ord(c):04X}" for c in chars)
        super().__init__(f"no font has a glyph for {len(chars)} character(s): {shown}")


def run(cfg: PipelineConfig, run_dir: RunDir, stages: Sequence[Stage]) -> ReportResult:
    """Render report.md and/or report.pdf (cfg.report.format) from the run folder's files: those of
    `stages` (every stage before the report, as `stages.py` lists them) and the files around them."""
    t0 = time.perf_counter()
    files = runfiles.load(run_dir, stages)
    want_md = cfg.report.format in ("md", "both")
    want_pdf = cfg.report.format in ("pdf", "both")

    drawn, chart_reasons = _draw_charts(files, run_dir)
    markdown = render_markdown(files, cfg.report, drawn, chart_reasons)
    out: dict[str, str] = {}
    notes = [f"运行目录中的问题：{w}" for w in files.warnings]
    notes += [f"未画图：{plain(r)}" for r in chart_reasons.values()]  # report.json: no code-span marks
    if want_md:
        write_text(run_dir / "report.md", markdown)
        out["md"] = "report.md"
    pages = 0
    replaced: list[str] = []
    pdf_warnings: list[str] = []
    if want_pdf:
        pdf = write_pdf(markdown, cfg.report, run_dir / "report.pdf", base_dir=run_dir.path)
        pages, replaced, pdf_warnings = pdf.pages, pdf.replaced, pdf.warnings
        out["pdf"] = "report.pdf"
        if replaced:
            notes.append(
                "PDF 中以下字符没有可用字体，已替换为码位显示："
                + "、".join(f"U+{ord(c):04X}" for c in replaced)
            )
    seconds = time.perf_counter() - t0
    headline = " + ".join(out.values()) + (f"（PDF {pages} 页）" if pages else "") + f"，{seconds:.1f} s"
    return ReportResult(
        files={**out, "assets": ASSETS},
        headline=headline,
        notes=notes,
        missing_glyphs=0,
        replaced_glyphs=[f"U+{ord(c):04X}" for c in replaced],
        pdf_warnings=pdf_warnings,
        pages=pages,
        render_s=round(seconds, 3),
    )


def _draw_charts(
    files: runfiles.RunFiles, run_dir: RunDir
) -> tuple[dict[str, charts.Chart | None], dict[str, str]]:
    """Draw the report's charts into report_assets/ (each file written atomically).

    The benchmark stage keeps its own charts in the same folder (results.files.charts): when they
    exist they are embedded as they are and only the loss curve is drawn here.
    """
    tr, bm = files.train, files.benchmark
    out_dir = run_dir / ASSETS
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, charts.Chart | None] = {}
    reasons: dict[str, str] = {}
    if files.metrics:
        ckpts = [c.step for c in tr.result.checkpoints if measured(c.step)]
        best_ckpt = tr.result.best_checkpoint
        best = (
            (best_ckpt.step, best_ckpt.eval_loss)
            if measured(best_ckpt.step) and measured(best_ckpt.eval_loss)
            else None
        )
        drawn["loss"] = charts.loss_chart(files.metrics, ckpts, best, out_dir)
        if drawn["loss"] is None:
            reasons["loss"] = "logs/metrics.jsonl 中没有 loss 或 eval_loss 记录"
    else:
        reasons["loss"] = files.metrics_error or "logs/metrics.jsonl 为空"
        if not tr.ok:
            reasons["loss"] += f"（{tr.why_missing}）"
    if bm.ok:
        stage_charts = _benchmark_stage_charts(files, bm)
        if stage_charts:
            for i, chart in enumerate(stage_charts):
                drawn[f"benchmark_{i}"] = chart
        else:
            # reporting.charts draws from plain rows: the typed rows as the stage wrote them.
            summary = [row.to_dict() for row in bm.result.summary]
            samples = [s for s in bm.result.samples if isinstance(s, dict)]
            limit = bm.result.roofline.limit_tokens_per_s
            drawn["latency"] = charts.latency_chart(summary, samples, out_dir)
            drawn["throughput"] = charts.throughput_chart(
                summary, float(limit) if isinstance(limit, (int, float)) else None, out_dir
            )
            if not drawn["latency"] and not drawn["throughput"]:
                reasons["benchmark"] = "benchmark.json 的 summary 中没有延迟或速度数据"
    else:
        reasons["benchmark"] = bm.why_missing
    # A chart that could not be drawn this time must not survive from an earlier report.
    written = {c.file for c in drawn.values() if c}
    for name in charts.REPORT_FILES:
        if name not in written and (out_dir / name).exists():
            (out_dir / name).unlink()
    return drawn, reasons


def _benchmark_stage_charts(
    files: runfiles.RunFiles, bm: runfiles.Stage[BenchmarkResult]
) -> list[charts.Chart]:
    """The benchmark stage's own chart files under report_assets/, when all of them exist."""
    found = []
    for rel in bm.result.files.charts:
        path = runfiles.inside(files.path, rel)
        if not (path.is_file() and path.suffix.lower() in (".png", ".svg") and path.parent.name == ASSETS):
            return []
        caption = {
            "benchmark_latency": "延迟随并发数的变化（基准测试阶段绘制）",
            "benchmark_tokens_per_s": "解码速度（tokens/秒）随并发数的变化（基准测试阶段绘制）",
        }.get(path.stem, f"基准测试图表 {path.name}（基准测试阶段绘制）")
        found.append(charts.Chart(path.name, caption))
    return found


def markdown_environment(directory: Path) -> jinja2.Environment:
    """Jinja for a Markdown template: StrictUndefined, every value through escape_md (its finalize)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=escape_md,
    )


def render_markdown(
    files: runfiles.RunFiles,
    report_cfg: ReportConfig,
    drawn: dict[str, charts.Chart | None],
    chart_reasons: dict[str, str],
    generated_at: str | None = None,
) -> str:
    """report.md text from the loaded run folder (charts already drawn under report_assets/)."""
    ctx = context.build(files, report_cfg, drawn, chart_reasons, generated_at or _generated_at())
    return markdown_environment(TEMPLATES).get_template("report.md.j2").render(**ctx)


def _generated_at() -> str:
    stamp = now_iso()  # 2025-11-29T10:04:05+08:00
    return f"{stamp[:10]} {stamp[11:19]}（UTC{stamp[19:]}）"


def markdown_to_html(markdown: str) -> str:
    """HTML body of report.md: CommonMark + tables, raw HTML off (so it shows as text, never as markup)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    table_open = None
    columns = 0
    for i, tok in enumerate(tokens[:-1]):
        nxt = tokens[i + 1]
        if tok.type == "paragraph_open" and nxt.type == "inline" and nxt.content.startswith("图："):
            tok.attrSet("class", "figure-caption")
        elif tok.type == "table_open":
            table_open, columns = tok, 0
        elif tok.type == "th_open":
            columns += 1
        if tok.type in ("th_open", "td_open") and nxt.type == "inline" and len(nxt.content) <= NOWRAP_CHARS:
            # Short cells ("通过", "8/0", "1007.2") never wrap: otherwise the automatic table layout,
            # which may break anywhere (overflow-wrap: anywhere), squeezes them to one character.
            tok.attrSet("class", "nw")
        elif tok.type == "thead_close" and table_open is not None:
            # Two-column fact tables get a fixed layout (label column 24%): WeasyPrint's automatic
            # table layout measures every possible line break of long Chinese text, which is slow.
            table_open.attrSet("class", "kv" if columns == 2 else f"cols-{columns}")
    return md.renderer.render(tokens, md.options, {})


def html_document(markdown: str, report_cfg: ReportConfig, title: str = REPORT_TITLE) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(
        body=markdown_to_html(markdown),
        project_name=report_cfg.project_name,
        author=report_cfg.author,
        title=title,
    )


@dataclass
class PdfResult:
    pages: int
    replaced: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@contextmanager
def _weasyprint_log() -> Iterator[list[logging.LogRecord]]:
    """Collect WeasyPrint's warnings (missing glyphs among them) while a document is laid out."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("weasyprint")
    handler = Collect(level=logging.WARNING)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)  # even if the root logger is set to ERROR
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _missing_chars(records: list[logging.LogRecord]) -> list[str]:
    chars = []
    for r in records:
        if r.getMessage().startswith(NOTDEF) and r.args:
            chars.append(str(r.args[0]))
    return sorted(set(chars))


def _layout(html: str, base_dir: Path, title: str) -> tuple[bytes, int, list[logging.LogRecord]]:
    """PDF bytes, page count and WeasyPrint's warnings for one HTML document (`title` in the page header)."""
    import weasyprint

    stylesheets = [weasyprint.CSS(filename=str(TEMPLATES / "report.css"))]
    if title != REPORT_TITLE:
        header = title.replace("\\", "").replace('"', "")
        stylesheets.append(weasyprint.CSS(string=f'@page {{ @top-left {{ content: "{header}"; }} }}'))
    with _weasyprint_log() as records:
        document = weasyprint.HTML(string=html, base_url=str(base_dir) + "/").render(stylesheets=stylesheets)
        # Glyphs are looked up when text is drawn, i.e. while the PDF is written.
        pdf_bytes = document.write_pdf()
    return pdf_bytes, len(document.pages), records


def render_pdf(
    markdown: str, report_cfg: ReportConfig, base_dir: Path, title: str = REPORT_TITLE
) -> tuple[bytes, PdfResult]:
    """PDF bytes of the report (images resolved against `base_dir`, the run folder).

    Characters that no font can draw are replaced by `(U+XXXX)` and the document is laid out again;
    if a glyph is still missing, MissingGlyphs is raised and no PDF is returned.
    """
    html = html_document(markdown, report_cfg, title)
    pdf_bytes, pages, records = _layout(html, base_dir, title)
    replaced = _missing_chars(records)
    if replaced:
        for ch in replaced:
            html = html.replace(ch, f"(U+{ord(ch):04X})")
        pdf_bytes, pages, records = _layout(html, base_dir, title)
        still = _missing_chars(records)
        if still:
            raise MissingGlyphs(still)
    warnings = [r.getMessage() for r in records if not r.getMessage().startswith(NOTDEF)]
    return pdf_bytes, PdfResult(pages, replaced, warnings)


def write_pdf(
    markdown: str, report_cfg: ReportConfig, target: Path, base_dir: Path, title: str = REPORT_TITLE
) -> PdfResult:
    charts.cjk_font_files()  # a clear error (how to install the font) instead of a PDF of boxes
    pdf_bytes, result = render_pdf(markdown, report_cfg, base_dir, title)
    with atomic_path(target) as tmp:
        tmp.write_bytes(pdf_bytes)
    return result
