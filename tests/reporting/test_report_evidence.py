"""The report's evidence for its verdicts: each metric's 95 % interval and verdict, the identity probe,
the split rule and the train/test leakage check (fake run folders, tests/fake_run.py; Markdown only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reporting import labels, report
from stages import reported
from tests import fake_run
from tests.reporting.helpers import kv, rows_by_first_cell, section
from trainer.config import load_config
from trainer.results import NotMeasured
from trainer.runfolder import RunDir


@pytest.fixture(scope="module")
def complete_md(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = fake_run.complete_run().write(tmp_path_factory.mktemp("complete") / "run")
    report.run(load_config(None, ["report.format=md"]), RunDir(path), reported())
    return (Path(path) / "report.md").read_text(encoding="utf-8")


def test_the_metrics_table_shows_each_interval_and_its_verdict(complete_md: str) -> None:
    rows = rows_by_first_cell(section(complete_md, "测试集评估结果"), "指标")
    assert rows["ROUGE-L"][3:] == ["+19.57 分", "[+12.40, +26.80]", "提升"]
    assert rows["ROUGE-2"][3:] == ["+12.54 分", "[-0.85, +25.90]", "无显著变化"]
    assert rows["评估损失"][3:] == ["+30.06%", "[+24.10, +35.90]", "提升"]
    assert rows["平均回答长度（字）"][5] == "下降（无优劣方向）"  # shorter, neither better nor worse
    assert rows["BLEU-4（语料级）"][1:] == ["9.05", "23.40", "+14.35 分", "—", rows["BLEU-4（语料级）"][5]]
    assert rows["BLEU-4（语料级）"][5].startswith("未判断（语料级指标")
    for metric in fake_run.complete_run().evaluate.metrics:  # 提升 / 下降 only where the interval excludes 0
        row = next(r for r in rows.values() if r[0].startswith(labels.METRIC_NAME_ZH[metric.key]))
        judged = metric.significance in ("improved", "worsened")
        assert (row[5] in ("提升", "下降")) is judged, metric.key


def test_the_conclusion_calls_only_significant_changes(complete_md: str) -> None:
    conclusion = section(complete_md, "结论")
    # (Markdown escapes the interval's brackets outside tables.)
    assert r"ROUGE-L 19.35 → 38.92（+19.57 分，95% 置信区间 \[+12.40, +26.80\]，提升）" in conclusion
    assert "配对自助法重采样 2,000 次" in conclusion
    # rouge2's interval contains 0; corpus BLEU-4 and Distinct-2 have none; length has no direction.
    assert "8 项指标显著提升、0 项显著下降、1 项无显著变化，2 项未判断显著性" in conclusion
    assert "BLEU-4（语料级） 9.05 → 23.40（+14.35 分，未判断显著性：语料级指标" in conclusion
    assert "ROUGE-L 显著提升，且显著提升的指标多于显著下降的指标" in conclusion


def test_the_identity_probe_is_reported_with_its_rule_and_interval(complete_md: str) -> None:
    text = section(complete_md, "测试集评估结果")
    probe = next(line for line in text.splitlines() if line.startswith("身份探针："))
    assert "34 道从未训练过的身份问题" in probe and "其中 9 道问及开发者" in probe
    assert "须含助手名称" in probe and "自称其他模型" in probe
    assert "微调前 1 道，微调后 30 道" in probe
    assert r"95% 置信区间 \[+73.53, +97.06\]，提升" in probe


def test_the_data_section_states_the_split_rule_and_the_leakage_found(complete_md: str) -> None:
    facts = kv(section(complete_md, "数据来源"))
    assert facts["划分规则"].startswith("验证集、测试集各不超过保留记录的 10%（至少 3 条）")
    assert "未触及上限" in facts["划分规则"] and "警告" not in facts["划分规则"]
    leak = facts["训练/测试重复检查"]
    assert "相似度 ≥ 0.7" in leak
    assert "测试集 2 条、验证集 1 条与训练集重复（完全相同 1 条，近似 2 条），已移入训练集 3 条" in leak
    assert "并从训练集补入与训练集无重复的记录（测试集 2 条、验证集 1 条）" in leak
    assert "什么是机器学习？" in leak and "0.778" in leak


def test_an_older_run_folder_says_the_checks_are_not_recorded(tmp_path: Path) -> None:
    run = fake_run.complete_run()
    absent = NotMeasured(absent=True)  # keys an older version did not write
    run.prepare.eval_split_cap = run.prepare.min_useful_train = run.prepare.leakage = absent
    run.evaluate.identity_probe = absent
    path = run.write(tmp_path / "run")
    report.run(load_config(None, ["report.format=md"]), RunDir(path), reported())
    md = (path / "report.md").read_text(encoding="utf-8")
    facts = kv(section(md, "数据来源"))
    assert facts["划分规则"] == "未测量：prepare.json 未记录划分规则（较早版本的运行）"
    assert facts["训练/测试重复检查"] == "未测量：prepare.json 未记录重复检查（较早版本的运行）"
    assert "身份探针：未测量：evaluate.json 未记录身份探针" in md
