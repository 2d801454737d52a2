"""The report speaks Chinese (issue #21): the English-sentence checker itself, the wording of the
stages' reason codes, and the report of a recorded real default run (tests/fixtures/default_run/).

The tiny run's report is checked in tests/test_e2e.py (a real `run.py all`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reporting import report, wording
from reporting.text import escape_md, verbatim
from stages import reported
from tests import fake_run
from tests.english_check import english_report_lines, english_sentences
from trainer.config import load_config
from trainer.results import NotMeasured, Reason
from trainer.runfolder import RunDir

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DEFAULT_RUN = FIXTURES / "default_run"
# The files of a run folder the report reads (reporting/runfiles.py), all small.
DEFAULT_RUN_FILES = (
    "config.resolved.yaml",
    "env.json",
    "prompt_format.json",
    "prepare.json",
    "train.json",
    "evaluate.json",
    "export.json",
    "deploy.json",
    "benchmark.json",
    "logs/metrics.jsonl",
    "evaluation_results.csv",
)

# Sentences an older report printed in its body (issue #21).
ISSUE_EXAMPLES = [
    "| 混合精度训练 | bf16（auto: no CUDA GPU; this CPU has bf16 units (amx_bf16), bf16 autocast on the CPU） |",
    "| API测试 | 失败：done_reason is 'length', not 'stop' (the answer hit num_predict) |",
    "| 推理引擎 | ollama；选择原因：auto: Ollama does not answer at http://127.0.0.1:11434 |",
    "| 显存占用 | 未测量：the model was not listed by /api/ps after the run |",
    "5. 部署阶段记录：no Ollama at http://127.0.0.1:9: deploy by hand with \\`cd models/gguf\\`",
    "| 部署状态 | 未部署：no Ollama at http://127.0.0.1:9 |",
]

CHINESE_LINES = [
    "| 混合精度训练 | bf16（auto（自动选择）：没有 CUDA GPU，本机 CPU 有 bf16 运算单元（amx_bf16、avx512_bf16）） |",
    "| 推理速度 | 25731.1 tokens/秒（并发 1，单请求解码速度均值） |",
    "| CPU | Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz，2 核 |",
    "| 基础模型 | Qwen/Qwen2.5-0.5B-Instruct |",
    "| 部署命令 | `cd /tmp/run/models/gguf && ollama create tiny-finetuned -f Modelfile` |",
    "模型已导出为 Q4_K_M GGUF（718.91 KiB），ROUGE-L 与 BLEU-4 见 evaluation_results.csv。",
    "![延迟随并发数的变化](report_assets/benchmark_latency.png)",
    "```text\nthe model answered in English here, inside a fenced block\n```",
    "| 格式类型 | Alpaca（instruction / input / output） |",
    "停止原因：`done_reason is 'length'`（原文）",
]


@pytest.mark.parametrize("line", ISSUE_EXAMPLES)
def test_checker_finds_the_issues_examples(line: str) -> None:
    assert english_sentences(line), line


@pytest.mark.parametrize("line", CHINESE_LINES)
def test_checker_accepts_chinese_with_code_names_and_units(line: str) -> None:
    assert english_sentences(line) == [], english_report_lines(line)


def test_checker_names_the_offending_line() -> None:
    md = "# 报告\n\n正常的一行。\n\n| 部署状态 | 未部署：no Ollama at http://127.0.0.1:9 |\n"
    assert english_sentences(md) == [(5, "no Ollama at")]
    assert "line 5" in english_report_lines(md)


def test_every_code_a_stage_writes_is_worded_in_chinese() -> None:
    params = {"requested": "auto", "units": ["amx_bf16"], "host": "http://127.0.0.1:9", "error": "HTTP 500"}
    for code in wording.CODES:
        text = escape_md(wording.reason(Reason(code=code, params=params)))
        assert english_sentences(text) == [], (code, text)


def test_precision_code_is_worded_not_quoted() -> None:
    code = Reason(
        code="cpu_bf16_autocast", params={"requested": "auto", "units": ["amx_bf16", "avx512_bf16"]}
    )
    text = wording.reason(code, "auto: no CUDA GPU; this CPU has bf16 units")
    assert "amx_bf16、avx512_bf16" in text and "no CUDA" not in text


def test_unknown_english_is_quoted_as_written_not_passed_off_as_chinese() -> None:
    english = "done_reason is 'length', not 'stop'"
    shown = escape_md("失败：" + wording.text(english))
    assert shown == "失败：`done_reason is 'length', not 'stop'`"
    assert english_sentences(shown) == []
    assert wording.text("no Ollama at http://127.0.0.1:9") == "在 http://127.0.0.1:9 没有可用的 Ollama 服务"


def test_verbatim_text_cut_by_shorten_still_ends_its_code_span() -> None:
    from reporting.text import shorten

    assert escape_md(shorten("原因：" + verbatim("x" * 40), 10)).count("`") == 2


def _render_md(path: Path) -> str:
    report.run(load_config(None, ["report.format=md"]), RunDir(path), reported())
    return (path / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["train_failed", "ollama_not_deployed", "gpu_less", "old_style"])
def test_reports_of_runs_with_failures_have_no_english_sentence(tmp_path: Path, name: str) -> None:
    md = _render_md(fake_run.build(name, tmp_path / "run"))
    assert english_sentences(md) == [], english_report_lines(md)


def _set_results(path: Path, stage: str, **values: object) -> None:
    record = json.loads((path / f"{stage}.json").read_text(encoding="utf-8"))
    record["results"].update(values)
    (path / f"{stage}.json").write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")


def test_an_older_run_folders_english_reasons_are_quoted_and_new_codes_are_worded(tmp_path: Path) -> None:
    """A run folder written before reason codes: its English is shown as a code span, not as prose;
    the same folder with codes reads in the report's Chinese."""
    path = fake_run.build("gpu_less", tmp_path / "run")
    english = "auto: no CUDA GPU and no bf16 unit on this CPU (avx512_bf16/amx_bf16), fp32"
    note = "stopped by train.max_minutes=8 after step 20 of 45"
    _set_results(path, "train", precision="fp32", precision_reason=english, notes=[note])
    md = _render_md(path)
    assert f"`{english}`" in md and f"`{note}`" in md
    assert english_sentences(md) == [], english_report_lines(md)

    _set_results(
        path,
        "train",
        precision_code={"code": "cpu_no_bf16", "params": {"requested": "auto"}},
        note_codes=[
            {"code": "time_budget_stop", "params": {"max_minutes": 8, "step": 20, "planned_steps": 45}}
        ],
    )
    md = _render_md(path)
    assert english not in md and note not in md
    assert "CPU 也没有 bf16 运算单元" in md and "在第 20 步（计划 45 步）停止" in md
    assert english_sentences(md) == [], english_report_lines(md)


@pytest.mark.skipif(
    not DEFAULT_RUN.is_dir(),
    reason="tests/fixtures/default_run/ is not recorded yet: copy the small files "
    f"({', '.join(DEFAULT_RUN_FILES)}) of a real default `python run.py all` run folder there",
)
def test_report_of_the_recorded_default_run_has_no_english_sentence(tmp_path: Path) -> None:
    run = tmp_path / "default_run"
    shutil.copytree(DEFAULT_RUN, run)
    missing = [rel for rel in DEFAULT_RUN_FILES if not (run / rel).exists()]
    assert not missing, f"tests/fixtures/default_run/ lacks {missing}"
    md = _render_md(run)
    assert english_sentences(md) == [], english_report_lines(md)


def test_a_benchmark_whose_requests_gave_too_few_tokens_reads_in_chinese(tmp_path: Path) -> None:
    """The benchmark's reason for a decode speed it could not measure (every answer ended before its
    second token, as a tiny model's may) is worded, not pasted as English prose."""
    path = fake_run.build("gpu_less", tmp_path / "run")

    def too_few_tokens(result) -> None:
        for level in result.summary:
            level.decode_tokens_per_s = NotMeasured("no request produced 2 or more tokens")

    fake_run.edit(path, "benchmark", too_few_tokens)
    md = _render_md(path)
    assert "没有一个请求生成 2 个或更多 token" in md
    assert english_sentences(md) == [], english_report_lines(md)
