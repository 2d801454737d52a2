"""Report section 模型评估 (`python run.py report`): metrics table, settings, identity check, examples.

Reads `evaluate.json` through its type (`trainer.results.EvaluateResult`) and the row count of
`evaluation_results.csv`. The metric names and definitions are the report's own
(`reporting.labels`, by metric key); every verdict (变好 / 变差, 明显改进 ...) is made here and in
`reporting.facts`.
"""

from __future__ import annotations

from typing import Any

from reporting import facts, labels, wording
from reporting.runfiles import RunFiles
from reporting.sections.common import list_note
from reporting.text import fenced, first_line, fmt_float, fmt_general, fmt_int, is_number, shorten, shown
from trainer.results import EvalExample, EvalMetric, IdentityCheck, NotMeasured, known

# Longest example text shown in full; the CSV holds every answer in full.
EXAMPLE_CHARS = 1500


def _improvement_text(m: EvalMetric) -> str:
    """The change, in the metric's units; its verdict is the interval's, in the next columns."""
    before, after, improvement = m.before, m.after, m.improvement
    if not is_number(improvement):
        if not (is_number(before) and is_number(after)):
            return "未测量：微调前或微调后无数值"
        return shown(NotMeasured("evaluate.json 未给出提升值"))
    return facts.change_text(m, improvement)


def _significance_cells(m: EvalMetric) -> list[str]:
    """[95 % interval of the change, 提升 / 下降 / 无显著变化] or why there is no verdict."""
    interval, word = facts.interval_text(m), labels.significance(m)
    if not (is_number(m.before) and is_number(m.after)):
        return ["—", "未比较"]
    if interval and word:
        return [interval, word]
    return ["—", f"未判断（{facts.no_interval_reason(m)}）"]


def _side(m: EvalMetric, value: Any) -> str:
    if is_number(value):
        return fmt_float(value, 4 if m.key == "loss" else 2)
    reason = value.why if isinstance(value, NotMeasured) else ""
    return shown(NotMeasured(wording.text(reason) or "evaluate.json 中该值为空，未说明原因"))


def _metric_rows(run: RunFiles) -> tuple[list[list[str]], list[str]]:
    """The before/after table (answer length first) and one definition line per metric."""
    rows, definitions = [], []
    ordered = sorted(facts.metrics(run), key=lambda m: m.key != "avg_answer_chars")
    for m in ordered:
        name = labels.metric_name(m)
        if m.key == "avg_answer_chars" and "（字）" not in name:
            name += "（字）"  # the table's only metric with a unit that its name does not say
        rows.append(
            [name, _side(m, m.before), _side(m, m.after), _improvement_text(m), *_significance_cells(m)]
        )
        definition = labels.metric_definition(m)
        extra = f"参考答案为 {fmt_float(m.reference)}" if is_number(m.reference) else ""
        direction_word = {True: "越高越好", False: "越低越好"}.get(facts.better_direction(m), "无优劣方向")
        definitions.append(
            f"{name}：{definition or 'evaluate.json 未给出定义'}（{direction_word}{'；' + extra if extra else ''}）"
        )
    return rows, definitions


def _settings_text(run: RunFiles) -> str:
    s = run.evaluate.result.settings
    decoding = "采样" if s.do_sample else "贪心解码"
    if s.do_sample:
        decoding += (
            f"（temperature={fmt_general(known(s.temperature, None))}，"
            f"top_p={fmt_general(known(s.top_p, None))}）"
        )
    csv_rows = (
        f"evaluation_results.csv 共 {fmt_int(run.eval_rows)} 行"
        if run.eval_rows is not None
        else run.eval_csv_error
    )
    return (
        f"测试集样本 {fmt_int(s.samples) if is_number(s.samples) else '未记录'} 条（{csv_rows}）；{decoding}，"
        f"max_new_tokens={fmt_general(known(s.max_new_tokens, None))}，"
        f"seed={fmt_general(known(s.seed, None))}；微调前后使用相同的解码设置。"
    )


def _identity_text(run: RunFiles, assistant_name: str) -> str:
    i = run.evaluate.value(run.evaluate.result.identity)
    if not isinstance(i, IdentityCheck):
        return shown(i)
    return (
        f"测试集的 {fmt_general(known(i.questions, None))} 道身份问题中，回答含助手名称“{assistant_name}”的："
        f"微调前 {fmt_general(known(i.before_hits, None))} 道，"
        f"微调后 {fmt_general(known(i.after_hits, None))} 道。"
    )


def _probe_text(run: RunFiles, assistant_name: str, author: str) -> str:
    """身份探针: what was asked, the scoring rule, the hits and the interval's verdict."""
    p = run.evaluate.result.identity_probe
    if isinstance(p, NotMeasured):
        return shown(
            NotMeasured(
                "evaluate.json 未记录身份探针（较早版本的运行）"
                if p.absent
                else "evaluate.identity_probe 为空，未运行"
            )
        )
    m = facts.metric(run, "identity_probe_pct")
    text = (
        f"{fmt_general(known(p.questions, None))} 道从未训练过的身份问题（{known(p.file, '未记录文件')}，"
        f"其中 {fmt_general(known(p.asks_author, None))} 道问及开发者；与训练问题相同或近似而排除 "
        f"{fmt_general(known(p.excluded_trained, None))} 道）。判定规则：回答须含助手名称“{assistant_name}”，"
        f"问及开发者时还须含“{author}”，自称其他模型或公司的产品（如 ChatGPT、通义千问）即判为错误。"
        f"答对：微调前 {fmt_general(known(p.before_hits, None))} 道，微调后 {fmt_general(known(p.after_hits, None))} 道"
    )
    return text + (f"；{facts.metric_change(m)}。" if m else "。")


def _example(n: int, e: EvalExample) -> dict[str, Any]:
    question = str(e.instruction or "")
    if str(e.input or "").strip():
        question += "\n\n" + str(e.input)
    kind = facts.EXAMPLE_KIND_ZH.get(str(known(e.kind, None)), "")
    example_id = known(e.id, None)
    title = f"示例 {n}" + (f"（{kind}，编号 {example_id}）" if kind else f"（编号 {example_id}）")
    return {
        "title": title,
        "question": fenced(shorten(question, EXAMPLE_CHARS)),
        "reference": fenced(shorten(str(e.reference or "（无参考答案）"), EXAMPLE_CHARS)),
        "before": fenced(shorten(str(e.before or "（空回答）"), EXAMPLE_CHARS)),
        "after": fenced(shorten(str(e.after or "（空回答）"), EXAMPLE_CHARS)),
        "verdict": facts.example_verdict(e),
    }


def evaluation(run: RunFiles, assistant_name: str, author: str = "") -> dict[str, Any]:
    """The 模型评估 section's slots."""
    ev = run.evaluate
    rows, definitions = _metric_rows(run)
    table_note = list_note(ev, rows, "evaluate.json 未记录任何指标。")
    if ev.ok:
        settings = _settings_text(run)
        judge = known(ev.result.judge, None)
        judge_text = (
            "未启用评审模型（评价与分析均由下述规则从指标得出）"
            if judge is None
            else f"评审模型：{first_line(str(judge), 200)}"
        )
        identity_text = _identity_text(run, assistant_name)
        probe_text = _probe_text(run, assistant_name, author)
    else:
        settings = identity_text = probe_text = shown(NotMeasured(ev.why_missing))
        judge_text = ""
    examples = [_example(n, e) for n, e in enumerate(ev.result.examples, start=1)] if ev.ok else []
    examples_note = list_note(ev, examples, "evaluate.json 未记录示例。")
    return {
        "settings": settings,
        "judge": judge_text,
        "rows": rows,
        "table_note": table_note,
        "definitions": definitions,
        "identity": identity_text,
        "identity_probe": probe_text,
        "examples": examples,
        "examples_note": examples_note,
        "qualitative": facts.qualitative(run),
    }
