"""`python run.py compare`: the comparison report of fake run folders (tests/fake_run.py), read back
from its Markdown, its PDF (pdftotext) and comparison.json; bad input is refused before anything is
written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from reporting import compare
from stages import reported
from tests import fake_run
from tests.reporting.helpers import PLACEHOLDER, pdf_text, rows_by_first_cell, section
from trainer.results import EvaluateResult, NotMeasured


def _scores(path: Path, rouge_after: list[float], prefix: str = "test") -> None:
    """Rewrite the run's evaluation_results.csv with one tuned ROUGE-L per item."""
    with open(path / "evaluation_results.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "instruction", "input", "reference", "rougeL_before", "rougeL_after"])
        for i, value in enumerate(rouge_after):
            w.writerow([f"{prefix}-{i:04d}", f"问题 {i}", "", f"参考答案 {i}", 10.0, value])


def _set_rouge_after(path: Path, value: float) -> None:
    def edit(results: EvaluateResult) -> None:
        for m in results.metrics:
            if m.key == "rougeL":
                m.after = value

    fake_run.edit(path, "evaluate", edit)


@pytest.fixture
def two_runs(tmp_path):
    a = fake_run.complete_run().write(tmp_path / "r16")
    b = fake_run.gpu_less_run().write(tmp_path / "r8")
    return a, b


def test_report_shows_config_differences_metrics_side_by_side_and_verdict(two_runs, tmp_path):
    a, b = two_runs
    result = compare.run([a, b], tmp_path / "cmp", reported())
    md = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    config = rows_by_first_cell(section(md, "配置差异"), "配置项")
    assert config["train.max_steps"][1:] == ["-1", "60"]
    assert "run_name" not in config and "train.lora_r" not in config  # equal values are not listed
    metrics = rows_by_first_cell(section(md, "评估指标"), "指标")
    assert metrics["ROUGE-L"][1].startswith("38.92（+19.57 分；区间 [+12.40, +26.80]，提升）")
    assert "区间未测量" in metrics["Distinct-2"][1]
    assert "变化区间未测量：语料级指标" in section(md, "评估指标")
    # Equal per-item scores: the paired interval is [0, 0] and the best run is not called better.
    assert "差异不显著" in section(md, "结论") and result.pairs[0]["significant"] is False
    assert "验证 Loss 最低：r16" in section(md, "结论")
    assert (tmp_path / "cmp" / "comparison_assets" / "compare_loss_curves.png").stat().st_size > 5000
    assert not PLACEHOLDER.search(md)
    text = pdf_text(tmp_path / "cmp" / "comparison.pdf")
    assert "微调运行对比报告" in text and "r16" in text and "r8" in text
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text(encoding="utf-8"))
    assert saved["best_by_primary"] == "r16" and saved["files"] == {
        "md": "comparison.md",
        "pdf": "comparison.pdf",
    }


def test_best_run_is_called_better_only_when_the_paired_interval_excludes_zero(two_runs, tmp_path):
    a, b = two_runs
    _scores(a, [30.0 + (i % 7) for i in range(40)])
    _scores(b, [20.0 + (i % 5) for i in range(40)])
    _set_rouge_after(a, 33.0)
    _set_rouge_after(b, 22.0)
    result = compare.run([b, a], tmp_path / "cmp", reported(), fmt="md")
    pair = result.pairs[0]
    assert result.best_by_primary == "r16" and pair["other"] == "r8"
    assert pair["significant"] and pair["low"] > 0 and pair["items"] == 40
    assert "显著更好" in section((tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8"), "结论")


def test_runs_on_different_test_items_are_compared_with_a_warning_and_no_significance(two_runs, tmp_path):
    a, b = two_runs
    _scores(a, [30.0 + (i % 7) for i in range(40)])
    _scores(b, [20.0 + (i % 5) for i in range(40)], prefix="other")
    _set_rouge_after(b, 22.0)
    result = compare.run([a, b], tmp_path / "cmp", reported(), fmt="md")
    md = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert "不在相同的测试项上" in section(md, "注意") and "测试项不同" in section(md, "注意")
    assert "不判断显著性" in section(md, "结论")
    assert result.pairs[0]["significant"] is False and result.pairs[0]["different_items"]


def test_older_run_without_intervals_and_a_run_without_benchmark_say_not_measured(two_runs, tmp_path):
    a, b = two_runs

    def drop_intervals(results: EvaluateResult) -> None:
        for m in results.metrics:  # as written before the intervals were measured: no such keys
            for key in (
                "change_ci95_low",
                "change_ci95_high",
                "significance",
                "paired_items",
                "interval_reason",
            ):
                setattr(m, key, NotMeasured(absent=True))

    fake_run.edit(b, "evaluate", drop_intervals)
    (b / "benchmark.json").unlink()
    compare.run([a, b], tmp_path / "cmp", reported(), fmt="md")
    md = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    note = next(line for line in md.splitlines() if line.startswith("- r8：") and "变化区间" in line)
    assert "ROUGE-L" in note and note.endswith("的变化区间未测量：evaluate.json 未给出置信区间")
    serving = section(md, "推理服务性能")
    assert "r8：未测量：基准测试阶段未运行（benchmark.json 不存在）" in serving
    assert rows_by_first_cell(serving, "运行")["r16"][1] == "ollama"


def test_bad_input_gets_one_message_and_writes_nothing(tmp_path, capsys):
    import run

    no_eval = fake_run.evaluation_missing_run().write(tmp_path / "no-eval")
    (tmp_path / "plain").mkdir()
    out = tmp_path / "cmp"
    code = run.main(
        ["compare", str(no_eval), str(tmp_path / "plain"), str(tmp_path / "absent"), "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "3 problems" in err
    assert "no-eval: a run without a completed evaluate stage (evaluate.json does not exist)" in err
    assert "plain: not a run folder" in err and "absent: no such folder" in err
    assert run.main(["compare", str(no_eval)]) == 2
    assert "compare needs at least two" in capsys.readouterr().err
