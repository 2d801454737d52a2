"""Report section 数据集 (`python run.py report`): sources, splits, cleaning, conversion, lengths.

Reads only `prepare.json` through its type (`trainer.results.PrepareResult`) and the report
settings; every Chinese label and sentence is made here.
"""

from __future__ import annotations

from typing import Any

from reporting import facts, labels
from reporting.runfiles import RunFiles, Stage
from reporting.text import fmt_general, fmt_int, is_number, shorten, shown
from trainer.config import ReportConfig
from trainer.results import LengthStats, NotMeasured, PrepareResult, known, measured

FORMAT_NAMES_ZH = {
    "sharegpt": "ShareGPT（conversations: from/value）",
    "messages": "messages（role/content）",
}
SPLIT_NAMES_ZH = (("train", "训练"), ("val", "验证"), ("test", "测试"))


def dataset(run: RunFiles, report_cfg: ReportConfig) -> dict[str, Any]:
    """The 数据集 section's slots."""
    pr = run.prepare
    r = pr.result
    splits = {
        k: shown(pr.value(getattr(r.splits, k)), lambda v: f"{fmt_int(v)} 条")
        for k in ("train", "val", "test")
    }
    sources, format_type = _sources_and_format(pr)
    identity = pr.value(r.identity_records)
    if measured(identity):
        identity_text = "，".join(
            f"{zh} {fmt_int(getattr(identity, k))} 条"
            for k, zh in SPLIT_NAMES_ZH
            if is_number(getattr(identity, k))
        )
    else:
        identity_text = shown(identity)
    return {
        "name": shown(pr.value(r.dataset_name)),
        "sources": sources,
        "splits": splits,
        "identity": identity_text,
        "split_rule": _split_rule(r) if pr.ok else shown(NotMeasured(pr.why_missing)),
        "leakage": _leakage(r) if pr.ok else shown(NotMeasured(pr.why_missing)),
        "format_type": format_type,
        "prompt_format": shown(pr.value(r.prompt_format)),
        "language": report_cfg.language,
        "domain": report_cfg.domain,
        "cleaning": _cleaning(r) if pr.ok else shown(NotMeasured(pr.why_missing)),
        "augmentation": _augmentation(r) if pr.ok else shown(NotMeasured(pr.why_missing)),
        "conversion": _conversion(r) if pr.ok else shown(NotMeasured(pr.why_missing)),
        "lengths": _lengths(pr),
    }


def _sources_and_format(pr: Stage[PrepareResult]) -> tuple[str, str]:
    """数据来源 (each input file and its record count) and 数据格式 (record formats, file formats)."""
    inputs = pr.value(pr.result.inputs)
    if not isinstance(inputs, list):
        return shown(inputs), shown(inputs)
    sources = "；".join(
        f"{known(i.path, None)}（{known(i.format, None)}，{fmt_int(i.records)} 条）"
        if is_number(i.records)
        else f"{known(i.path, None)}（{known(i.format, None)}）"
        for i in inputs
    )
    formats = sorted({str(i.format) for i in inputs if i.format})
    format_type = "Alpaca 指令格式（instruction / input / output）"
    kinds = known(pr.result.record_formats, {}) or {}
    conversational = {k: v for k, v in kinds.items() if k != "alpaca" and is_number(v) and v}
    if conversational:
        format_type += "；对话格式：" + "、".join(
            f"{FORMAT_NAMES_ZH.get(k, k)} {fmt_int(v)} 条" for k, v in sorted(conversational.items())
        )
    if formats:
        format_type += f"，源文件格式：{'、'.join(formats)}"
    return sources, format_type


def _split_rule(r: PrepareResult) -> str:
    """划分规则: the val/test cap and, below the useful size, the small-train warning with its fix."""
    cap = r.eval_split_cap
    if not measured(cap):
        return shown(NotMeasured("prepare.json 未记录划分规则（较早版本的运行）"))
    text = (
        f"验证集、测试集各不超过保留记录的 {fmt_general(round(float(cap.max_share) * 100, 1))}%"
        f"（至少 {fmt_int(cap.min_items)} 条）；配置要求验证集 {fmt_int(cap.val_requested)} 条、"
        f"测试集 {fmt_int(cap.test_requested)} 条"
    )
    text += "，已按上限缩小，使大部分记录留作训练" if cap.capped is True else "，未触及上限"
    train, useful = r.splits.train, r.min_useful_train
    if is_number(train) and is_number(useful) and train < useful:
        text += (
            f"。⚠ 警告：训练集只有 {fmt_int(train)} 条（少于 {fmt_int(useful)} 条），模型难以学到多少，"
            "测试指标也难有结论。处理办法：在 data.files 中补充更多不重复的问答数据（数百条以上）"
        )
    return text


def _leakage(r: PrepareResult) -> str:
    """训练/测试重复检查: the method, what was found and what was done, with up to three examples."""
    lk = r.leakage
    if not measured(lk):
        return shown(NotMeasured("prepare.json 未记录重复检查（较早版本的运行）"))
    checked, found = lk.checked, lk.found
    n_found = sum(int(v) for v in (found.test, found.val) if is_number(v))
    text = (
        f"将测试集 {fmt_int(checked.test)} 条、验证集 {fmt_int(checked.val)} 条的问题与训练集逐一比较"
        f"（字符二元组 Jaccard 相似度 ≥ {fmt_general(lk.threshold)} 或规范化后完全相同即判为重复）："
    )
    if not n_found:
        return text + "未发现重复"
    action = (
        f"已移入训练集 {fmt_int(lk.moved_to_train)} 条，不参与评估"
        if lk.mode == "remove"
        else "保留在原划分中并标记，评估指标不计入这些样本"
    )
    refilled = lk.refilled
    if lk.mode == "remove" and is_number(refilled.test) and is_number(refilled.val):
        action += f"，并从训练集补入与训练集无重复的记录（测试集 {fmt_int(refilled.test)} 条、验证集 {fmt_int(refilled.val)} 条）"
    text += (
        f"测试集 {fmt_int(found.test)} 条、验证集 {fmt_int(found.val)} 条与训练集重复"
        f"（完全相同 {fmt_int(lk.exact)} 条，近似 {fmt_int(lk.near)} 条），{action}（明细见 data/leakage.jsonl）"
    )
    examples = [
        f"“{shorten(str(e.question), 40)}” ≈ 训练集“{shorten(str(e.train_question), 40)}”"
        f"（相似度 {fmt_general(e.similarity)}）"
        for e in list(lk.examples)[:3]
    ]
    return text + ("；例如：" + "；".join(examples) if examples else "")


def _cleaning(r: PrepareResult) -> str:
    """数据清洗: records read and kept, what was dropped and why, and the >20 % drop warning."""
    records_in, kept = r.records_in, r.records_kept
    dropped = known(r.dropped, {})
    parts = [
        f"读入 {fmt_int(records_in) if is_number(records_in) else '未记录'} 条，"
        f"保留 {fmt_int(kept) if is_number(kept) else '未记录'} 条"
    ]
    drops = [
        f"{facts.DROP_REASON_ZH.get(k, k)} {fmt_int(v)} 条"
        for k, v in (dropped.items() if isinstance(dropped, dict) else [])
        if is_number(v) and v
    ]
    parts.append("剔除：" + "、".join(drops) if drops else "未剔除任何记录")
    if is_number(r.normalized):
        parts.append(f"规范化（去除首尾空白、合并空白、Unicode NFC）{fmt_int(r.normalized)} 条")
    cleaning = "；".join(parts)
    if drops:
        cleaning += "（明细见 data/rejected.jsonl）"
    # The stage's own `fix` / `message` are English: the report words the warning from the numbers.
    w = r.drop_warning
    if measured(w) and is_number(w.share_pct):
        cause_key = str(known(w.main_cause, None))
        cleaning += (
            f"。⚠ 警告：共剔除 {fmt_int(w.dropped)} 条，占读入的 {w.share_pct}%"
            f"（超过 20%），主要原因：{facts.DROP_REASON_ZH.get(cause_key, cause_key)} "
            f"{fmt_int(w.main_cause_count)} 条；实际参与训练的数据比原始数据少。处理办法："
            f"{facts.DROP_FIX_ZH.get(cause_key, '见 data/rejected.jsonl')}"
        )
    return cleaning


def _augmentation(r: PrepareResult) -> str:
    """数据增强: only what the prepare stage recorded (results.augmented)."""
    if not measured(r.augmented):
        return "未进行（prepare.json 未记录任何数据增强步骤）"
    if not r.augmented:
        return "未进行（本次配置未启用数据增强）"
    return "；".join(f"{labels.augmentation(a)}，新增 {known(a.records_added, None)} 条" for a in r.augmented)


def _conversion(r: PrepareResult) -> str:
    """格式转换: the chat template, multi-turn loss, the length limit and what happened to longer records."""
    overlong = known(r.overlong, "未记录")
    too_long = (known(r.dropped, {}) or {}).get("too_long", 0)
    text = f"套用 {known(r.prompt_format, '未记录')} 对话模板，转为 prompt / completion 两段（只对回答计算 Loss）"
    if is_number(r.multi_turn_records) and r.multi_turn_records:
        text += f"；多轮对话 {fmt_int(r.multi_turn_records)} 条，每一轮助手回答都计算 Loss"
    if measured(r.max_length):
        text += f"；最大长度 {fmt_int(r.max_length)} tokens"
    text += f"；超长处理方式：{overlong}"
    if overlong == "drop":
        text += f"（丢弃 {fmt_int(too_long or 0)} 条）"
    elif is_number(r.truncated):
        text += f"（截断 {fmt_int(r.truncated)} 条）"
    return text


def _lengths(pr: Stage[PrepareResult]) -> list[list[str]]:
    """Rows of the length table: min / mean / p50 / p95 / max of questions, answers and samples."""
    rows = []
    r = pr.result
    for label, value in (
        ("问题（字）", r.length_chars.prompt),
        ("回答（字）", r.length_chars.output),
        ("完整样本（tokens）", r.length_tokens.total),
    ):
        got = pr.value(value)
        if isinstance(got, LengthStats):
            cells = [
                fmt_general(round(float(getattr(got, k)), 1)) if is_number(getattr(got, k)) else "未记录"
                for k in ("min", "mean", "p50", "p95", "max")
            ]
            rows.append([label, *cells])
        else:
            rows.append([label, shown(got), "", "", "", ""])
    return rows
