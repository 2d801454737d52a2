"""The report stage (`python run.py report`) on fake run folders (tests/fake_run.py).

Each fixture is rendered once per module (Markdown and PDF: real Jinja2, markdown-it-py, matplotlib
and WeasyPrint with Noto Sans CJK); the tests then read report.md back (tables, sections) and the
PDF through poppler's pdftotext/pdffonts.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reporting import labels, report
from stages import reported
from tests import fake_run
from tests.reporting.helpers import (
    PLACEHOLDER,
    kv,
    outside_fences,
    pdf_fonts,
    pdf_text,
    pdf_words_outside,
    rows_by_first_cell,
    section,
    split_row,
    table_blocks,
)
from trainer.config import load_config
from trainer.results import EvalMetric, NotMeasured
from trainer.runfolder import RunDir

REQUIRED = ["complete", "gpu_less", "ollama_not_deployed", "evaluation_missing"]
TITLE = "模型微调训练报告"


@dataclass
class Rendered:
    path: Path
    result: dict[str, Any]
    md: str
    pdf: str  # text extracted by pdftotext ("" when no PDF was asked for)


def _render(path: Path, fmt: str = "both") -> Rendered:
    result = report.run(load_config(None, [f"report.format={fmt}"]), RunDir(path), reported()).to_dict()
    md_path, pdf_path = path / "report.md", path / "report.pdf"
    md = md_path.read_text(encoding="utf-8") if md_path.exists() else ""
    return Rendered(path, result, md, pdf_text(pdf_path) if pdf_path.exists() else "")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Rendered]:
    cache: dict[tuple[str, str], Rendered] = {}

    def get(name: str, fmt: str = "both") -> Rendered:
        if (name, fmt) not in cache:
            path = fake_run.build(name, tmp_path_factory.mktemp(f"{name}-{fmt}") / "run")
            cache[(name, fmt)] = _render(path, fmt)
        return cache[(name, fmt)]

    return get


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _headings(md: str, max_level: int = 3) -> list[str]:
    return [ln for ln in outside_fences(md) if re.match(rf"^#{{1,{max_level}}} ", ln)]


# ---- every required fixture ---------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED)
def test_renders_both_formats_without_placeholders_or_missing_glyphs(rendered, name: str) -> None:
    r = rendered(name)
    assert r.result["files"]["md"] == "report.md" and r.result["files"]["pdf"] == "report.pdf"
    assert (r.path / "report.pdf").stat().st_size > 10_000
    assert r.result["missing_glyphs"] == 0 and r.result["replaced_glyphs"] == []
    assert r.result["pdf_warnings"] == []  # WeasyPrint accepted every CSS rule and image
    assert r.md.startswith(f"# {TITLE}\n")
    assert not PLACEHOLDER.search(r.md), PLACEHOLDER.search(r.md)
    assert not PLACEHOLDER.search(r.pdf)
    assert not re.search(r"\b(None|nan|NaN|null|undefined)\b", r.md)
    assert TITLE in r.pdf
    # Bold headings are real bold glyphs, and every embedded font is Noto CJK SC (no fallback font).
    fonts = pdf_fonts(r.path / "report.pdf").splitlines()[2:]
    assert any("+Noto-Sans-CJK-SC-Bold " in f for f in fonts)
    assert any("+Noto-Sans-CJK-SC " in f for f in fonts)
    assert all("+Noto-Sans" in f and "CJK-SC" in f for f in fonts), fonts
    # Every report has the same sections in the same order, whatever was measured.
    assert _headings(r.md) == _headings(rendered("complete").md)


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("complete", ["958条", "2.1843→1.1027", "38.92", "Q4_K_M", "128.4tokens/秒", "545.2", "7.31GiB"]),
        ("gpu_less", ["未测量：本次运行无GPU", "2.4107→1.7342", "79.5tokens/秒", "83.1tokens/秒"]),
        ("ollama_not_deployed", ["未部署：" + _squash(fake_run.NOT_DEPLOYED_REASON), "未运行："]),
        ("evaluation_missing", ["未测量：评估阶段未运行（evaluate.json不存在）", "1.4120→1.3210"]),
    ],
)
def test_pdf_text_has_the_key_numbers(rendered, name: str, needles: list[str]) -> None:
    text = _squash(rendered(name).pdf)
    for needle in needles:
        assert needle in text, needle


def test_charts_are_written_and_embedded(rendered) -> None:
    r = rendered("complete")
    for name in ("report_loss_curve.png", "report_latency.png", "report_throughput.png"):
        png = r.path / "report_assets" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](report_assets/{name})" in r.md
    # Three chart images in the PDF.
    assert (r.path / "report.pdf").read_bytes().count(b"/Subtype /Image") >= 3


# ---- the complete run: every number in the summary tables is the fixture's ------------------------


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def test_complete_summary_tables_match_the_fixture(rendered) -> None:
    md = rendered("complete").md
    run = fake_run.complete_run()
    tr, pr, ex, bm = run.train, run.prepare, run.export, run.benchmark
    hp = tr.hyperparameters

    facts = kv(section(md, "数据来源"))
    for key, label in (("train", "训练集"), ("val", "验证集"), ("test", "测试集")):
        assert facts[label] == f"{getattr(pr.splits, key)} 条"
    assert facts["数据集名称"] == pr.dataset_name

    assert kv(section(md, "数据预处理"))["数据增强"] == "身份类训练样本重复 3 次（仅训练集），新增 96 条"
    cleaning = kv(section(md, "数据预处理"))["数据清洗"]
    assert f"读入 {pr.records_in:,} 条，保留 {pr.records_kept:,} 条" in cleaning
    assert f"重复 {pr.dropped['duplicate']} 条" in cleaning

    lora = kv(section(md, "LoRA配置"))
    assert lora["r（秩）"] == str(tr.lora.r)
    assert lora["alpha"] == str(tr.lora.alpha)
    assert lora["dropout"] == str(tr.lora.dropout)
    assert lora["target_modules"] == ", ".join(tr.lora.target_modules)

    h = kv(section(md, "训练超参数"))
    assert h["epochs"] == "3"
    assert h["batch_size（每设备）"] == str(hp.per_device_batch_size)
    assert h["梯度累积步数"] == str(hp.gradient_accumulation_steps)
    assert h["有效批次大小"] == str(hp.effective_batch_size)
    assert float(h["学习率"]) == hp.learning_rate
    assert h["Warmup步数"] == str(hp.warmup_steps)
    assert h["最大长度"] == str(hp.max_length)
    assert h["优化器"] == hp.optimizer
    assert h["混合精度训练"].startswith(tr.precision)

    model = kv(section(md, "模型配置"))
    assert model["量化"].startswith(tr.quantization)
    assert model["设备"] == tr.device

    curve = kv(section(md, "训练曲线"))
    assert curve["训练Loss"].startswith(f"{tr.train_loss_first:.4f} → {tr.train_loss_last:.4f}")
    assert curve["验证Loss"].startswith(f"{tr.eval_loss_first:.4f} → {tr.eval_loss_last:.4f}")
    assert f"{tr.resources.wall_time_s} s" in curve["训练时长"]
    assert curve["训练步数"] == str(tr.global_step)

    ckpts = rows_by_first_cell(section(md, "关键检查点"), "step")
    assert set(ckpts) == {str(c.step) for c in tr.checkpoints}
    for c in tr.checkpoints:
        row = ckpts[str(c.step)]
        assert float(row[1]) == c.train_loss and float(row[2]) == c.eval_loss and row[3] == c.path
    assert ckpts[str(tr.best_checkpoint.step)][4] == "★ 最佳"

    conv = kv(section(md, "模型转换"))
    assert conv["量化"] == ex.gguf.quantization
    assert conv["模型大小"].startswith(_gib(ex.gguf.size_bytes))

    train_res = kv(section(md, "训练资源"))
    assert train_res["GPU显存"].startswith(f"峰值保留 {_gib(tr.resources.peak_gpu_reserved_bytes)}")
    assert train_res["内存"].startswith(f"峰值 RSS {_gib(tr.resources.peak_rss_bytes)}")

    infer = kv(section(md, "推理资源"))
    first = bm.summary[0]
    assert infer["显存占用"] == _gib(bm.memory.vram_bytes)
    assert infer["推理速度"].startswith(f"{first.decode_tokens_per_s} tokens/秒（并发 1")
    assert f"端到端 p50 {first.e2e_ms.p50} ms / p99 {first.e2e_ms.p99} ms" in infer["延迟"]
    levels = rows_by_first_cell(section(md, "推理资源"), "并发")
    for row in bm.summary:
        cells = levels[str(row.concurrency)]
        assert cells[1] == f"{row.requests}/{row.failures}"
        assert float(cells[2]) == row.ttft_ms.p50 and float(cells[5]) == row.e2e_ms.p50
        assert float(cells[7]) == row.decode_tokens_per_s
        assert float(cells[8]) == row.aggregate_tokens_per_s

    stages = rows_by_first_cell(section(md, "阶段耗时"), "阶段")
    for stage, seconds in fake_run.DURATIONS.items():
        row = next(v for k, v in stages.items() if f"（{stage}）" in k)
        assert row[1] == "完成"
        assert (f"{seconds:.1f} 秒" if seconds < 60 else f"（{seconds:.1f} s）") in row[3]


def _table_name(key: str) -> str:
    """The metrics table's first cell for a metric key the report knows (its own label)."""
    return labels.METRIC_NAME_ZH[key] + ("（字）" if key == "avg_answer_chars" else "")


def test_complete_metrics_table_names_each_key_in_the_reports_words(rendered) -> None:
    metrics = rows_by_first_cell(section(rendered("complete").md, "测试集评估结果"), "指标")
    assert next(iter(metrics)) == "平均回答长度（字）"
    expected = fake_run.complete_run().evaluate.metrics
    assert len(metrics) == len(expected)
    for m in expected:
        row = metrics[_table_name(m.key)]
        digits = 4 if m.key == "loss" else 2
        assert float(row[1]) == round(m.before, digits), m.key
        assert float(row[2]) == round(m.after, digits), m.key
        assert float(re.match(r"[-+][\d.]+", row[3]).group()) == round(m.improvement, 2), m.key


def test_complete_rule_based_texts_quote_their_numbers(rendered) -> None:
    md = rendered("complete").md
    examples = section(md, "示例对比")
    assert "ROUGE-L 由 2.10 变为 61.80（+59.70），明显改进" in examples
    assert "ROUGE-L 由 78.40 变为 41.20（-37.20），明显退步" in examples
    # The per-example sentence is the report's, from the example's numbers and texts.
    first = fake_run.complete_run().evaluate.examples[0]
    assert (
        f"明显改进（阈值 ±5）；示例按 ROUGE-L 提升最大选出；微调后回答 {len(first.after.strip())} 字，"
        f"参考答案 {len(first.reference)} 字。" in examples
    )
    assert "提高 59.7 分" not in examples  # the ROUGE-L change is worded once
    assert "评估阶段结论" not in md
    qualitative = kv(section(md, "定性分析"))
    assert set(qualitative) == {"回答准确性", "回答相关性", "语言流畅度", "专业性"}
    assert qualitative["回答准确性"].startswith(
        f"以“{labels.QUALITATIVE_MEASURES['accuracy']}”衡量：微调前 19.35，微调后 38.92（+19.57）"
    )
    assert qualitative["语言流畅度"].startswith(
        f"以“{labels.QUALITATIVE_MEASURES['fluency']}”衡量：微调前 6.51，微调后 3.71（-2.80），"
        "按困惑度的提升 +43.01%（95% 置信区间 [+35.20, +50.30]）判断：显著提升"
    )
    # Without an interval (relevance: no per-item pairs in the table) no verdict is claimed.
    assert qualitative["回答相关性"].endswith("数值朝变好的方向移动，但未检验显著性，不作判断。")
    definitions = section(md, "测试集评估结果")
    for key, definition in labels.METRIC_DEFINITIONS.items():
        assert f"{_table_name(key)}：{definition}" in definitions, key
    problems = section(md, "遇到的问题")
    assert "训练集仅 958 条" in problems
    assert "485.6 tokens/秒）的 26.4%" in problems
    conclusion = section(md, "结论")
    assert "本次微调有效" in conclusion


def test_an_older_evaluate_json_renders_in_the_reports_own_words(rendered) -> None:
    """name_zh / definition / measure / verdict / description of an older run folder: the report's
    wording wins for what it knows; a foreign metric keeps the file's name and definition."""
    md = rendered("old_style", "md").md
    assert not PLACEHOLDER.search(md)
    assert fake_run.OLD_NAME_ZH not in md and "旧版定义" not in md and "旧版度量说明" not in md
    metrics = rows_by_first_cell(section(md, "测试集评估结果"), "指标")
    foreign = fake_run.foreign_metric()
    assert list(metrics) == [
        _table_name(m.key)
        for m in sorted(fake_run.complete_run().evaluate.metrics, key=lambda m: m.key != "avg_answer_chars")
    ] + [foreign.name_zh, "chrf"]
    # No interval in the file: the change is shown, no verdict is claimed.
    assert metrics["chrf"][1:4] == ["30.00", "31.00", "+1.00 分"]
    assert metrics["chrf"][5] == "未判断（evaluate.json 未给出置信区间）"  # no interval: no verdict
    definitions = section(md, "测试集评估结果")
    assert f"{foreign.name_zh}：{foreign.definition}（越高越好）" in definitions
    assert "chrf：evaluate.json 未给出定义（无优劣方向）" in definitions
    examples = section(md, "示例对比")
    # Examples with their ROUGE-L get the report's sentence; the one without quotes the file's verdict.
    assert examples.count("ROUGE-L 由 2.10 变为 61.80（+59.70），明显改进") == 1
    assert examples.count(f"评估阶段结论：{fake_run.OLD_VERDICT}") == 1
    assert kv(section(md, "数据预处理"))["数据增强"] == "身份类训练样本重复 3 次（仅训练集），新增 96 条"


# ---- the other fixtures -----------------------------------------------------------------------


def test_gpu_less_says_why_gpu_values_are_missing(rendered) -> None:
    md = rendered("gpu_less").md
    train_res = kv(section(md, "训练资源"))
    assert train_res["GPU显存"].startswith("未测量：本次运行无GPU")
    assert train_res["内存"].startswith(f"峰值 RSS {_gib(2_952_790_016)}")
    assert kv(section(md, "推理资源"))["显存占用"].startswith("未测量：本次运行无GPU")
    model = kv(section(md, "模型配置"))
    assert model["量化"].startswith("none（4-bit NF4 需要 CUDA GPU")
    assert kv(section(md, "训练超参数"))["混合精度训练"].startswith("fp32（本次运行无GPU")
    problems = section(md, "遇到的问题")
    assert "配置要求 4-bit QLoRA（model.load_in_4bit=true），实际量化为 none" in problems
    assert "验证 Loss 在 step 40 达到最低 1.8871，之后在 step 60 升至 1.9512" in problems
    assert "未使用混合精度训练（精度 fp32）" in problems
    assert "使用最佳检查点（step 40）" in section(md, "改进方向")


def test_ollama_not_deployed_reports_the_reason(rendered) -> None:
    md = rendered("ollama_not_deployed").md
    deploy = kv(section(md, "Ollama部署"))
    assert deploy["部署状态"] == f"未部署：{fake_run.NOT_DEPLOYED_REASON}"
    assert deploy["API测试"] == f"未运行：{fake_run.NOT_DEPLOYED_REASON}"
    assert deploy["与 llama.cpp 对比"] == deploy["模板验证"] == "未运行"
    assert f"模型未部署到 Ollama：{fake_run.NOT_DEPLOYED_REASON}。" in section(md, "遇到的问题")
    assert "python run.py deploy" in section(md, "改进方向")
    assert "基准测试阶段记录：Ollama 不可用，改用 llama.cpp" in section(md, "遇到的问题")
    assert "未部署到 Ollama" in section(md, "结论")


def test_evaluation_missing_is_not_measured_everywhere(rendered) -> None:
    md = rendered("evaluation_missing").md
    reason = "未测量：评估阶段未运行（evaluate.json 不存在）"
    assert reason in section(md, "测试集评估结果")
    assert reason in section(md, "示例对比")
    assert all(v.startswith("未测量：评估阶段未运行") for v in kv(section(md, "定性分析")).values())
    assert "| 指标 | 微调前 |" not in md
    assert "模型评估缺失：评估阶段未运行" in section(md, "结论")
    assert "运行 “python run.py evaluate”" in section(md, "改进方向")
    attachments = rows_by_first_cell(section(md, "附件"), "附件")
    assert attachments["评估结果"][2].startswith("不存在（评估阶段未运行")
    # Everything that was measured is still there.
    assert kv(section(md, "训练曲线"))["训练步数"] == "180"


def test_failed_training_and_an_empty_run_folder_still_render(rendered) -> None:
    failed = rendered("train_failed", "md").md
    assert "训练阶段失败（`CUDA out of memory. Tried to allocate 2.00 GiB" in failed
    assert "report_assets/report_loss_curve.png" in failed  # the partial loss log is still drawn
    assert "logs/metrics.jsonl 有 1 行无法解析，已跳过" in failed
    assert kv(section(failed, "训练超参数"))["学习率"] == "0.0002"  # from config.resolved.yaml
    assert "不是实际使用值" in section(failed, "训练配置")

    empty = rendered("nothing_run", "md")
    assert empty.result["files"] == {"md": "report.md", "assets": "report_assets"}
    assert empty.md.count("未测量：") > 40
    assert not PLACEHOLDER.search(empty.md)
    for stage in tuple(s.name for s in reported()):
        assert f"运行 “python run.py {stage}”" in empty.md
    assert not (empty.path / "report.pdf").exists()


# ---- safety: text from the dataset, the model or a stage file cannot change the layout ------------

LONG_LINE = "超长无空格" + "a" * 2000
INJECT = f"a | b\n# 注入的标题\n<script>alert(1)</script>\n[链接](http://evil.example)\n```\n{LONG_LINE}"


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    run = fake_run.complete_run()
    ev, tr = run.evaluate, run.train
    ev.examples[0].after = INJECT
    ev.examples[0].instruction = "问题 | 列\n# 标题"
    ev.examples[1].reference = INJECT
    # An older file's verdict is quoted when the example has no ROUGE-L to word it from.
    ev.examples[2].verdict = INJECT
    ev.examples[2].rougeL_before = NotMeasured(absent=True)
    # Metric keys the report does not know are shown as the key, or as an older file's name_zh.
    ev.metrics[0].key = "BLEU | <i>4</i>"
    ev.metrics.append(EvalMetric(key="x", name_zh="外部 | <b>名</b>\n# 标题", definition=INJECT))
    tr.backend_reason = LONG_LINE
    tr.checkpoints[0].path = "checkpoints/" + "b" * 2000
    tr.notes = ["# 标题\n| a | b |\n<script>x()</script>"]
    run.prepare.dataset_name = "数据|集 # x <script>alert(1)</script> *强调* _斜体_ &lt;"
    run.deploy.api_test.cases[0].answer = "答案 | 含竖线 <b>粗</b>\n## 二级"
    return _render(run.write(tmp_path_factory.mktemp("inject") / "run"))


def test_injected_text_keeps_every_table_row_intact(injected: Rendered) -> None:
    for block in table_blocks(injected.md):
        widths = {len(split_row(line)) for line in block}
        assert len(widths) == 1, block
    assert [ln for ln in outside_fences(injected.md) if ln.startswith("# ")] == [f"# {TITLE}"]
    assert "标题" not in "\n".join(_headings(injected.md, 6))


def test_injected_text_is_shown_not_interpreted_in_html(injected: Rendered) -> None:
    html = report.markdown_to_html(injected.md)
    assert "<script" not in html.lower() and "<b>" not in html and "<i>" not in html
    assert "<a href" not in html and "<em>" not in html
    assert html.count("<h1>") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "数据|集 # x &lt;script&gt;alert(1)&lt;/script&gt; *强调* _斜体_ &amp;lt;" in html
    assert "BLEU | &lt;i&gt;4&lt;/i&gt;" in html
    assert "外部 | &lt;b&gt;名&lt;/b&gt;" in html
    assert "评估阶段结论：a | b # 注入的标题 &lt;script&gt;" in html


def test_injected_long_lines_stay_inside_the_page(injected: Rendered) -> None:
    pdf = injected.path / "report.pdf"
    assert pdf_words_outside(pdf) == []
    text = _squash(injected.pdf)
    assert "<script>alert(1)</script>" in text
    assert "a" * 500 in text  # the long line is wrapped, not cut
    assert injected.result["missing_glyphs"] == 0


# ---- glyphs, fonts, copies, formats ------------------------------------------------------------


def test_a_character_no_font_has_is_replaced_by_its_code_point(tmp_path: Path) -> None:
    # U+13000 (an Egyptian hieroglyph) is in no font of fonts-noto-cjk or DejaVu.
    markdown = f"# {TITLE}\n\n| 回答 |\n| --- |\n| 象形文字 \U00013000 结束 |\n"
    pdf_bytes, result = report.render_pdf(markdown, load_config(None, []).report, tmp_path)
    assert result.replaced == ["\U00013000"]
    (tmp_path / "glyph.pdf").write_bytes(pdf_bytes)
    text = pdf_text(tmp_path / "glyph.pdf")
    assert "(U+13000)" in text and "\U00013000" not in text and "象形文字" in text


def test_a_missing_glyph_left_after_replacement_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(report, "_missing_chars", lambda records: ["\U00013000"])
    with pytest.raises(report.MissingGlyphs, match="U\\+13000"):
        report.render_pdf(f"# {TITLE}\n", load_config(None, []).report, tmp_path)


def test_missing_cjk_font_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from reporting import charts
    from trainer import plotting
    from trainer.errors import UserError

    monkeypatch.setattr(plotting, "FONT_FILES", ())
    monkeypatch.setattr(plotting.shutil, "which", lambda _name: None)
    with pytest.raises(UserError, match="fonts-noto-cjk"):
        charts.cjk_font_files()


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith("report") and "report_assets" not in p.parts
    }


def test_a_copied_run_folder_renders_and_no_stage_file_changes(tmp_path: Path) -> None:
    original = fake_run.gpu_less_run().write(tmp_path / "original")
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    before = _digest(copy)
    r = _render(copy, "md")
    assert _digest(copy) == before
    assert (copy / "report_assets" / "report_loss_curve.png").exists()
    assert "运行目录 copy 中的文件" in r.md
    assert not (copy / "report.pdf").exists()


def _tiny_png(path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\xff\xff\xff"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png + chunk(b"IEND", b""))


def test_the_benchmark_stages_own_charts_are_embedded_and_kept(tmp_path: Path) -> None:
    run = fake_run.complete_run()
    names = ["report_assets/benchmark_latency.png", "report_assets/benchmark_tokens_per_s.png"]
    run.benchmark.files.charts = names
    path = run.write(tmp_path / "run")
    for name in names:
        _tiny_png(path / name)
    r = _render(path, "md")
    for name in names:
        assert f"]({name})" in r.md
        assert (path / name).exists()
    assert not (path / "report_assets" / "report_latency.png").exists()
    assert (path / "report_assets" / "report_loss_curve.png").exists()
