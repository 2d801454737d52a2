"""Rule-based sentences of `python run.py report`: 评价, 定性分析 and 结论 (问题与改进: `reporting.findings`).

Reads nothing itself: every rule takes the loaded run folder (`reporting.runfiles.RunFiles`, whose
stage results are the typed `trainer.results` objects) and returns Chinese sentences that quote the
numbers they rest on. No rule invents a judgement that the files do not support; where the files
are silent the sentence says so. The thresholds below are the whole of the judgement.
"""

from __future__ import annotations

from typing import Any

from reporting import labels, wording
from reporting.runfiles import RunFiles
from reporting.text import (
    fmt_bytes,
    fmt_duration,
    fmt_float,
    fmt_int,
    fmt_loss,
    fmt_signed,
    is_number,
    shorten,
    shown,
)
from trainer.results import EvalExample, EvalMetric, QualitativeMeasure, known, measured

# ROUGE-L change (points, 0-100 scale) above which one example counts as better or worse.
EXAMPLE_DELTA_POINTS = 5.0

QUALITATIVE_LABELS = {
    "accuracy": "回答准确性",
    "relevance": "回答相关性",
    "fluency": "语言流畅度",
    "professionalism": "专业性",
}
EXAMPLE_KIND_ZH = {
    "largest_gain": "按 ROUGE-L 提升最大选出",
    "regression": "按 ROUGE-L 下降最大选出",
    "random": "随机抽取",
}
DROP_REASON_ZH = {
    "invalid_record": "格式无效",
    "empty_instruction": "指令为空",
    "empty_output": "回答为空",
    "duplicate": "重复",
    "too_long": "超长",
    "placeholder": "含未填充的占位符",
}
# How to keep the records of each drop reason (the report's data-section warning).
DROP_FIX_ZH = {
    "too_long": "调大 data.max_length（例如 data.max_length=1024），或设 data.overlong=truncate 截断过长回答",
    "duplicate": "检查 data.files 中是否重复列出同一文件、数据中是否有重复记录",
    "placeholder": "在数据中填写或删除 data/rejected.jsonl 列出的 {{...}} 占位符",
    "invalid_record": "按 data/rejected.jsonl 修正缺失或非文本的字段",
    "empty_output": "补全 data/rejected.jsonl 列出的空回答",
    "empty_instruction": "补全 data/rejected.jsonl 列出的空问题",
}


def direction(before: Any, after: Any, higher_is_better: bool | None = True, digits: int = 2) -> str | None:
    """变好 / 变差 / 持平 (equal at the shown precision); 上升 / 下降 when no direction is better
    (`higher_is_better` None, e.g. answer length); None when either side is missing."""
    if not (is_number(before) and is_number(after)):
        return None
    if round(float(after), digits) == round(float(before), digits):
        return "持平"
    if higher_is_better is None:
        return "上升" if after > before else "下降"
    better = after > before if higher_is_better else after < before
    return "变好" if better else "变差"


def better_direction(item: EvalMetric | QualitativeMeasure) -> bool | None:
    """`higher_is_better` of a metric: True, False, or None when the stage does not say."""
    value = item.higher_is_better
    return value if isinstance(value, bool) else None


def metrics(run: RunFiles) -> list[EvalMetric]:
    return [m for m in run.evaluate.result.metrics if m.key] if run.evaluate.ok else []


def metric(run: RunFiles, key: str) -> EvalMetric | None:
    return next((m for m in metrics(run) if m.key == key), None)


def change_text(m: EvalMetric, value: Any) -> str:
    """A change of metric `m` with its unit: `+3.20 分`, `-12.50%`, `+20.00 个百分点`."""
    if m.improvement_kind == "relative_pct":
        return f"{fmt_signed(value)}%"
    if str(known(m.key, "")).endswith("_pct"):
        return f"{fmt_signed(value)} 个百分点"
    return f"{fmt_signed(value)} 分"


def interval_text(m: EvalMetric) -> str | None:
    """`[+1.20, +5.60]` (the 95 % interval of the improvement, in its units); None without one."""
    low, high = m.change_ci95_low, m.change_ci95_high
    if not (is_number(low) and is_number(high)):
        return None
    return f"[{fmt_signed(low)}, {fmt_signed(high)}]"


def no_interval_reason(m: EvalMetric) -> str:
    """Why a metric has no interval, in the report's words."""
    if getattr(m.significance, "absent", False):
        return "evaluate.json 未给出置信区间"
    if is_number(m.paired_items):
        return f"仅 {fmt_int(m.paired_items)} 条配对样本，无法估计置信区间"
    return "语料级指标，没有逐条配对，未做置信区间"


def metric_change(m: EvalMetric) -> str:
    """`ROUGE-L 12.30 → 45.60（+33.30 分，95% 置信区间 [+20.10, +41.00]，提升）` or why a side
    or the interval is missing. 提升 / 下降 only where the interval excludes 0."""
    name = labels.metric_name(m)
    before, after = m.before, m.after
    if not (is_number(before) and is_number(after)):
        return f"{name} 未能比较（微调前 {_num_or_dash(before)}，微调后 {_num_or_dash(after)}）"
    digits = 4 if m.key == "loss" else 2
    change = change_text(m, m.improvement) if is_number(m.improvement) else fmt_signed(after - before)
    interval, word = interval_text(m), labels.significance(m)
    tail = (
        f"95% 置信区间 {interval}，{word}" if interval and word else f"未判断显著性：{no_interval_reason(m)}"
    )
    return f"{name} {fmt_float(before, digits)} → {fmt_float(after, digits)}（{change}，{tail}）"


def significant(run: RunFiles) -> dict[str, list[EvalMetric]]:
    """The metrics by their interval's verdict: improved, worsened, no_significant_change, untested
    (increased / decreased, without a better direction, count as neither improved nor worsened)."""
    out: dict[str, list[EvalMetric]] = {
        "improved": [],
        "worsened": [],
        "no_significant_change": [],
        "untested": [],
    }
    for m in metrics(run):
        if not (is_number(m.before) and is_number(m.after)):
            continue
        verdict = str(known(m.significance, "")) if interval_text(m) else "untested"
        out.setdefault(verdict, []).append(m)
    return out


def _num_or_dash(value: Any) -> str:
    return fmt_float(value) if is_number(value) else "无数值"


def example_verdict(example: EvalExample) -> str:
    """评价 of one example: its ROUGE-L change against the reference, how it was picked, and its
    ROUGE-L and lengths in words (`reporting.labels.example_lengths`)."""
    before, after = example.rougeL_before, example.rougeL_after
    kind = EXAMPLE_KIND_ZH.get(str(known(example.kind, None)), "")
    parts = []
    if is_number(before) and is_number(after):
        delta = float(after) - float(before)
        if delta >= EXAMPLE_DELTA_POINTS:
            word = "明显改进"
        elif delta <= -EXAMPLE_DELTA_POINTS:
            word = "明显退步"
        else:
            word = "基本持平"
        parts.append(
            f"与参考答案的 ROUGE-L 由 {fmt_float(before)} 变为 {fmt_float(after)}（{fmt_signed(delta)}），"
            f"{word}（阈值 ±{EXAMPLE_DELTA_POINTS:g}）"
        )
    else:
        parts.append("evaluate.json 未给出该示例的 ROUGE-L，无法按分数评价")
    if kind:
        parts.append(f"示例{kind}")
    lengths = labels.example_lengths(example)
    if lengths:
        parts.append(lengths)
    if not (is_number(before) and is_number(after)):
        # Without the numbers only an older evaluate.json's own verdict is left: quoted as its words.
        verdict = shorten(" ".join(str(example.verdict or "").split()), 300)
        if verdict:
            parts.append(f"评估阶段结论：{verdict}")
    return "；".join(parts) + "。"


# A move without an interval is described, never judged: no 改善 / 变差 without evidence.
MOVE_WORDS_ZH = {
    "变好": "数值朝变好的方向移动",
    "变差": "数值朝变差的方向移动",
    "持平": "数值基本不变",
    "上升": "数值上升",
    "下降": "数值下降",
}


# The metrics table row whose interval decides a qualitative dimension (the others have none).
QUALITATIVE_METRIC = {"accuracy": "rougeL", "fluency": "perplexity"}


def _qualitative_word(run: RunFiles, dimension: str, moved: str | None) -> str:
    """The dimension's verdict from its metric's interval, else the bare direction marked untested."""
    m = metric(run, QUALITATIVE_METRIC.get(dimension, ""))
    word = labels.significance(m) if m else None
    interval = interval_text(m) if m else None
    if m and word and interval:
        change = change_text(m, m.improvement) if is_number(m.improvement) else ""
        verdict = word if word == "无显著变化" else f"显著{word}"
        return f"按{labels.metric_name(m)}的提升 {change}（95% 置信区间 {interval}）判断：{verdict}"
    return f"{MOVE_WORDS_ZH[moved or '持平']}，但未检验显著性，不作判断"


def qualitative(run: RunFiles) -> list[tuple[str, str]]:
    """定性分析 rows: each dimension's measure, before → after, and whether it moved the right way."""
    ev = run.evaluate
    rows = []
    for key, label in QUALITATIVE_LABELS.items():
        got = ev.value(getattr(ev.result.qualitative, key))
        if not measured(got):
            rows.append((label, shown(got)))
            continue
        item: QualitativeMeasure = got
        measure = labels.qualitative_measure(key, item) or "evaluate.json 未说明度量方式"
        unit = str(item.unit or "")
        before, after = item.before, item.after
        if not (is_number(before) and is_number(after)):
            reason = wording.text(item.reason) or "微调前或微调后无数值"
            rows.append((label, f"以“{measure}”衡量，未能比较：{reason}"))
            continue
        word = _qualitative_word(run, key, direction(before, after, better_direction(item)))
        rows.append(
            (
                label,
                f"以“{measure}”衡量：微调前 {fmt_float(before)}{unit}，微调后 {fmt_float(after)}{unit}"
                f"（{fmt_signed(after - before)}{unit}），{word}。",
            )
        )
    return rows


def _training_sentence(run: RunFiles) -> str:
    tr = run.train
    if not tr.ok:
        return f"训练未完成：{tr.why_missing}，因此无法判断微调效果。"
    r = tr.result
    n_train = run.prepare.result.splits.train if run.prepare.ok else None
    on = f"在 {fmt_int(n_train)} 条训练样本上" if is_number(n_train) else ""
    method = "QLoRA" if r.quantization == "4-bit NF4" else "LoRA"
    lora = r.lora
    sentence = (
        f"{on}以 {method}（r={known(lora.r, None)}，alpha={known(lora.alpha, None)}）"
        f"训练 {known(r.global_step, None)} 步"
    )
    if is_number(r.resources.wall_time_s):
        sentence += f"，用时 {fmt_duration(r.resources.wall_time_s)}"
    for label, first, last in (
        ("训练 Loss", r.train_loss_first, r.train_loss_last),
        ("验证 Loss", r.eval_loss_first, r.eval_loss_last),
    ):
        if is_number(first) and is_number(last) and first:
            sentence += f"；{label} 由 {fmt_loss(first)} 变为 {fmt_loss(last)}（{fmt_signed((last - first) / first * 100, 1)}%）"
    return sentence + "。"


def _evaluation_sentences(run: RunFiles) -> list[str]:
    ev = run.evaluate
    if not ev.ok:
        return [f"模型评估缺失：{ev.why_missing}，微调前后的效果未经测量。"]
    groups = significant(run)
    better, worse, flat = (len(groups[k]) for k in ("improved", "worsened", "no_significant_change"))
    keys = ("rougeL", "bleu4", "corpus_bleu4", "identity_probe_pct")
    key_text = "；".join(metric_change(m) for m in (metric(run, k) for k in keys) if m)
    samples, resamples = ev.result.settings.samples, ev.result.settings.bootstrap_resamples
    on = f"测试集 {fmt_int(samples)} 条样本上" if is_number(samples) else "测试集上"
    if is_number(resamples):
        on += f"（配对自助法重采样 {fmt_int(resamples)} 次，95% 置信区间不含 0 才算提升或下降）"
    sentence = f"{on}，{better} 项指标显著提升、{worse} 项显著下降、{flat} 项无显著变化"
    if groups["untested"]:
        sentence += f"，{len(groups['untested'])} 项未判断显著性"
    if key_text:
        sentence += f"：{key_text}"
    out = [sentence + "。"]
    rouge = metric(run, "rougeL")
    rule = "按“ROUGE-L 显著提升，且显著提升的指标多于显著下降的指标”这一规则"
    if rouge and rouge in groups["improved"] and better > worse:
        out.append(f"{rule}，本次微调有效。")
    elif any(groups.values()):
        out.append(f"{rule}，本次微调的效果尚不能确认。")
    return out


def _delivery_sentence(run: RunFiles) -> str:
    ex, dp = run.export, run.deploy
    if ex.ok:
        quant, size = ex.result.gguf.quantization, ex.result.gguf.size_bytes
        size_text = f"（{fmt_bytes(size)}）" if is_number(size) else ""
        sentence = f"模型已导出为 {quant or '未记录量化类型的'} GGUF{size_text}"
    else:
        sentence = f"模型未导出：{ex.why_missing}"
    if not dp.ok:
        return sentence + f"；部署：{dp.why_missing}。"
    r = dp.result
    if r.status == "deployed":
        test = api_test_word(known(r.api_test.status, None))
        template = r.api_test.template
        proof = ""
        if measured(template) and template.status == "verified":
            proof = (
                f"，提示 token 与训练格式逐一相同（{template.matching_tokens}/{template.expected_tokens}）"
            )
        sentence += f"，已部署到 Ollama（模型名 {known(r.model_name, None)}，API 测试{test}{proof}）"
    elif r.status == "failed":
        sentence += (
            f"，部署到 Ollama 失败：{wording.reason(r.reason_code, r.reason) or 'deploy.json 未说明原因'}"
        )
    else:
        sentence += (
            f"，未部署到 Ollama：{wording.reason(r.reason_code, r.reason) or 'deploy.json 未说明原因'}"
        )
    return sentence + "。"


def _speed_sentences(run: RunFiles) -> list[str]:
    bm = run.benchmark
    if not bm.ok:
        return [f"推理性能未测量：{bm.why_missing}。"]
    rows = list(bm.result.summary)
    if not rows:
        return []
    first = min(rows, key=lambda r: known(r.concurrency, 0) or 0)
    tps, e2e = first.decode_tokens_per_s, first.e2e_ms.p50
    parts = [f"{known(bm.result.engine, '未记录引擎')} 推理在并发 {known(first.concurrency, None)} 时"]
    parts.append(f"解码 {fmt_float(tps, 1)} tokens/秒" if is_number(tps) else "解码速度未记录")
    if is_number(e2e):
        parts.append(f"端到端延迟 p50 {fmt_float(e2e, 1)} ms")
    return ["，".join(parts) + "。"]


def conclusion(run: RunFiles) -> list[str]:
    """结论: training, evaluation, export/deployment and speed, one sentence each, with their numbers."""
    return [
        _training_sentence(run),
        *_evaluation_sentences(run),
        _delivery_sentence(run),
        *_speed_sentences(run),
    ]


def api_test_word(status: Any) -> str:
    """deploy.json api_test.status in Chinese."""
    return {
        "passed": "通过",
        "failed": "未通过",
        "inconclusive": "无法判定（模板未能验证）",
        "not_run": "未运行",
    }.get(str(status), f"状态 {status}")
