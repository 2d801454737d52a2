"""Rule-based sentences of `python run.py report`: 评价, 定性分析, 问题与改进, 结论.

Reads nothing itself: every rule takes the loaded run folder (`reporting.runfiles.RunFiles`) and
returns Chinese sentences that quote the numbers they rest on. No rule invents a judgement that the
files do not support; where the files are silent the sentence says so. The thresholds below are
the whole of the judgement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reporting.runfiles import STAGE_NAMES_ZH, RunFiles
from reporting.text import (
    first_line,
    fmt_bytes,
    fmt_duration,
    fmt_float,
    fmt_general,
    fmt_int,
    fmt_loss,
    fmt_signed,
    is_number,
    shorten,
)

# ROUGE-L change (points, 0-100 scale) above which one example counts as better or worse.
EXAMPLE_DELTA_POINTS = 5.0
# Validation loss this much above its minimum at the last evaluation: a sign of overfitting.
OVERFIT_RATIO = 1.02
# Share of answers that hit max_new_tokens (percent) above which truncation is a problem.
TRUNCATION_PCT = 10.0
# Share of input records dropped by prepare (percent) above which it is a problem.
DROPPED_PCT = 5.0
# Train split smaller than this: more data is the first improvement.
SMALL_TRAIN_SPLIT = 1000
# Decoding below this fraction of the memory-bandwidth limit is worth a look.
ROOFLINE_FRACTION = 0.5

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


def better_direction(item: dict[str, Any]) -> bool | None:
    """`higher_is_better` of a metric: True, False, or None when the stage does not say."""
    value = item.get("higher_is_better")
    return value if isinstance(value, bool) else None


def metrics(run: RunFiles) -> list[dict[str, Any]]:
    rows = run.stage("evaluate").raw("metrics", default=[])
    return [m for m in rows if isinstance(m, dict) and m.get("key")]


def metric(run: RunFiles, key: str) -> dict[str, Any] | None:
    return next((m for m in metrics(run) if m.get("key") == key), None)


def metric_change(m: dict[str, Any]) -> str:
    """`ROUGE-L 12.30 → 45.60（+33.30，变好）` or the reason a side is missing."""
    name = m.get("name_zh") or m.get("key")
    before, after = m.get("before"), m.get("after")
    if not (is_number(before) and is_number(after)):
        return f"{name} 未能比较（微调前 {_num_or_dash(before)}，微调后 {_num_or_dash(after)}）"
    verdict = direction(before, after, better_direction(m))
    return f"{name} {fmt_float(before)} → {fmt_float(after)}（{fmt_signed(after - before)}，{verdict}）"


def _num_or_dash(value: Any) -> str:
    return fmt_float(value) if is_number(value) else "无数值"


def example_verdict(example: dict[str, Any]) -> str:
    """评价 of one example: its ROUGE-L change against the reference, then the stage's own verdict."""
    before, after = example.get("rougeL_before"), example.get("rougeL_after")
    kind = EXAMPLE_KIND_ZH.get(str(example.get("kind")), "")
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
    verdict = shorten(" ".join(str(example.get("verdict") or "").split()), 300)
    if verdict:
        parts.append(f"评估阶段结论：{verdict}")
    return "；".join(parts) + "。"


def qualitative(run: RunFiles) -> list[tuple[str, str]]:
    """定性分析 rows: each dimension's measure, before → after, and whether it moved the right way."""
    ev = run.stage("evaluate")
    rows = []
    for key, label in QUALITATIVE_LABELS.items():
        got = ev.get("qualitative", key)
        if not got.ok:
            rows.append((label, f"未测量：{got.reason}"))
            continue
        item = got.value if isinstance(got.value, dict) else {}
        measure = item.get("measure") or "evaluate.json 未说明度量方式"
        unit = str(item.get("unit") or "")
        before, after = item.get("before"), item.get("after")
        if not (is_number(before) and is_number(after)):
            reason = item.get("reason") or "微调前或微调后无数值"
            rows.append((label, f"以“{measure}”衡量，未能比较：{reason}"))
            continue
        verdict = direction(before, after, better_direction(item))
        word = {
            "变好": "有所改善",
            "变差": "有所变差",
            "持平": "基本不变",
            "上升": "数值上升",
            "下降": "数值下降",
        }[verdict or "持平"]
        rows.append(
            (
                label,
                f"以“{measure}”衡量：微调前 {fmt_float(before)}{unit}，微调后 {fmt_float(after)}{unit}"
                f"（{fmt_signed(after - before)}{unit}），{word}。",
            )
        )
    return rows


@dataclass
class Finding:
    """One problem found in the files and, where a rule knows one, the improvement it suggests."""

    problem: str
    improvement: str | None = None


def _stage_findings(run: RunFiles) -> list[Finding]:
    out = []
    for name, zh in STAGE_NAMES_ZH.items():
        st = run.stage(name)
        if st.ok:
            continue
        if st.status == "missing" and not st.file_error:
            out.append(
                Finding(
                    f"{zh}阶段未运行（{name}.json 不存在），报告中相关数值标记为未测量。",
                    f"运行 “python run.py {name}” 补齐{zh}阶段后重新生成报告。",
                )
            )
        else:
            out.append(
                Finding(
                    f"{st.why_missing}。",
                    f"按错误信息修复后运行 “python run.py {name}”，再重新生成报告。",
                )
            )
    return out


def _train_findings(run: RunFiles) -> list[Finding]:
    tr = run.stage("train")
    if not tr.ok:
        return []
    out = []
    requested_backend = (
        run.config.get("train", {}).get("backend") if isinstance(run.config.get("train"), dict) else None
    )
    backend = tr.raw("backend")
    if requested_backend in ("unsloth", "auto") and backend and backend != "unsloth":
        out.append(
            Finding(
                f"训练后端回退为 {backend}（配置 train.backend={requested_backend}）："
                f"{tr.raw('backend_reason', default='train.json 未说明原因')}。",
                "安装可用的 Unsloth（或在 GPU 机器上运行）以使用其优化内核。",
            )
        )
    wants_4bit = (run.config.get("model") or {}).get("load_in_4bit") is True
    quant = tr.raw("quantization")
    if wants_4bit and quant != "4-bit NF4":
        out.append(
            Finding(
                f"配置要求 4-bit QLoRA（model.load_in_4bit=true），实际量化为 {quant or '未记录'}："
                f"{tr.raw('quantization_reason', default='train.json 未说明原因')}。",
                "在带 CUDA GPU 的机器上训练以启用 4-bit NF4 量化，降低显存占用。",
            )
        )
    precision = tr.raw("precision")
    if precision == "fp32":
        wall = tr.raw("resources", "wall_time_s")
        took = f"，本次训练用时 {fmt_duration(wall)}" if is_number(wall) else ""
        out.append(
            Finding(
                f"未使用混合精度训练（精度 fp32）：{tr.raw('precision_reason', default='train.json 未说明原因')}{took}。",
                "在支持 bf16/fp16 的 GPU 上训练，可显著缩短训练时间并减少内存。",
            )
        )
    if run.env.get("gpu") is None and not run.env_error:
        tps = tr.raw("resources", "tokens_per_s")
        speed = f"，训练吞吐 {fmt_float(tps, 1)} tokens/秒" if is_number(tps) else ""
        cpu = run.env.get("cpu_model") or "未记录型号"
        cores = run.env.get("cpu_count")
        out.append(
            Finding(
                f"本次运行无 GPU（env.json 中 gpu 为空）：训练在 CPU（{cpu}，{cores if cores else '?'} 核）上进行{speed}。",
                None,
            )
        )
    # Overfitting: the last validation loss is clearly above the lowest one.
    evals = [(r["step"], r["eval_loss"]) for r in run.metrics if is_number(r.get("eval_loss"))]
    if len(evals) >= 3:
        best_step, best_loss = min(evals, key=lambda p: p[1])
        last_step, last_loss = evals[-1]
        if last_loss > best_loss * OVERFIT_RATIO:
            best = tr.raw("best_checkpoint", "step")
            dropout = tr.raw("lora", "dropout")
            use = f"使用最佳检查点（step {best}）" if best is not None else "保存并使用验证 Loss 最低的检查点"
            out.append(
                Finding(
                    f"验证 Loss 在 step {best_step} 达到最低 {fmt_loss(best_loss)}，之后在 step {last_step} "
                    f"升至 {fmt_loss(last_loss)}（高出 {fmt_float((last_loss / best_loss - 1) * 100, 1)}%），有过拟合迹象。",
                    f"{use}，或减少训练轮数 / 增大 LoRA dropout（当前 {fmt_general(dropout) if dropout is not None else '未记录'}）。",
                )
            )
    return out


def _data_findings(run: RunFiles) -> list[Finding]:
    pr = run.stage("prepare")
    if not pr.ok:
        return []
    out = []
    records_in = pr.raw("records_in")
    dropped = pr.raw("dropped", default={})
    total = sum(v for v in dropped.values() if is_number(v)) if isinstance(dropped, dict) else 0
    if is_number(records_in) and records_in > 0 and total / records_in * 100 > DROPPED_PCT:
        detail = "、".join(
            f"{DROP_REASON_ZH.get(k, k)} {fmt_int(v)} 条" for k, v in dropped.items() if is_number(v) and v
        )
        out.append(
            Finding(
                f"数据准备丢弃了 {fmt_int(total)}/{fmt_int(records_in)} 条记录"
                f"（{fmt_float(total / records_in * 100, 1)}%，超过 {DROPPED_PCT:g}%）：{detail}。",
                "查看 data/rejected.jsonl 中每条被拒记录的原因并修正源数据。",
            )
        )
    train_n = pr.raw("splits", "train")
    if is_number(train_n) and train_n < SMALL_TRAIN_SPLIT:
        out.append(
            Finding(
                f"训练集仅 {fmt_int(train_n)} 条（少于 {SMALL_TRAIN_SPLIT} 条）。",
                "扩充高质量的领域问答数据，再比较测试集指标。",
            )
        )
    return out


def _eval_findings(run: RunFiles) -> list[Finding]:
    ev = run.stage("evaluate")
    if not ev.ok:
        return []
    out = []
    lr = run.stage("train").raw("hyperparameters", "learning_rate")
    for m in metrics(run):
        if m.get("key") == "hit_max_tokens_pct":
            continue  # its own rule below
        if direction(m.get("before"), m.get("after"), better_direction(m)) == "变差":
            out.append(
                Finding(
                    f"微调后指标变差：{metric_change(m)}。",
                    "对照 evaluation_results.csv 中该指标下降的样本检查训练数据"
                    + (f"，并尝试降低学习率（当前 {fmt_general(lr)}）" if lr is not None else "")
                    + "。",
                )
            )
    hit = metric(run, "hit_max_tokens_pct")
    max_new = ev.raw("settings", "max_new_tokens")
    if hit and is_number(hit.get("after")) and hit["after"] > TRUNCATION_PCT:
        out.append(
            Finding(
                f"微调后 {fmt_float(hit['after'], 1)}% 的回答达到生成上限"
                f"（max_new_tokens={max_new if max_new is not None else '未记录'}）被截断，超过 {TRUNCATION_PCT:g}%。",
                "提高 evaluate.max_new_tokens，或检查回答是否缺少结束标记（模板 / stop 设置）。",
            )
        )
    failures = ev.raw("failures")
    count = len(failures) if isinstance(failures, list) else failures
    if is_number(count) and count > 0:
        out.append(Finding(f"评估中有 {fmt_int(count)} 条样本生成失败（evaluate.json failures）。", None))
    return out


def _deploy_findings(run: RunFiles) -> list[Finding]:
    dp = run.stage("deploy")
    if not dp.ok:
        return []
    out = []
    status = dp.raw("status")
    reason = dp.raw("reason", default="deploy.json 未说明原因")
    if status == "not_deployed":
        out.append(
            Finding(
                f"模型未部署到 Ollama：{reason}。",
                "安装并启动 Ollama（“ollama serve”），然后运行 “python run.py deploy”。",
            )
        )
    elif status == "failed":
        out.append(Finding(f"Ollama 部署失败：{reason}。", "按错误信息修复后运行 “python run.py deploy”。"))
    cases = dp.raw("api_test", "cases", default=[])
    test_status = dp.raw("api_test", "status")
    if test_status == "failed":
        ok = sum(1 for c in cases if isinstance(c, dict) and c.get("ok"))
        out.append(
            Finding(
                f"API 测试未通过：{ok}/{len(cases)} 个用例成功。",
                "检查 Modelfile 的 TEMPLATE 与 stop 参数是否与训练时的对话格式一致（prompt_format.json）。",
            )
        )
    if dp.raw("api_test", "matches_llamacpp") is False:
        out.append(
            Finding(
                "Ollama 的回答与 llama.cpp 直接推理的回答不一致（api_test.matches_llamacpp=false）。",
                "核对 Ollama 模型的模板、stop 与 num_ctx 设置。",
            )
        )
    return out


def _benchmark_findings(run: RunFiles) -> list[Finding]:
    bm = run.stage("benchmark")
    if not bm.ok:
        return []
    out = []
    for row in bm.raw("summary", default=[]):
        if not isinstance(row, dict):
            continue
        failures, requests = row.get("failures"), row.get("requests")
        if is_number(failures) and failures > 0:
            out.append(
                Finding(
                    f"并发 {row.get('concurrency')} 时 {fmt_int(failures)}/{fmt_int(requests or 0)} 个请求失败。",
                    "提高 benchmark.request_timeout_s 或降低并发数后重新测试。",
                )
            )
    if bm.raw("partial") is True:
        out.append(
            Finding(
                f"基准测试结果不完整：{bm.raw('partial_reason', default='benchmark.json 未说明原因')}。",
                "重新运行 “python run.py benchmark --force” 得到完整结果。",
            )
        )
    fraction = bm.raw("roofline", "achieved_fraction")
    limit = bm.raw("roofline", "limit_tokens_per_s")
    if is_number(fraction) and fraction < ROOFLINE_FRACTION:
        limit_text = f"{fmt_float(limit, 1)} tokens/秒" if is_number(limit) else "未记录"
        out.append(
            Finding(
                f"单请求解码速度只达到内存带宽上限（{limit_text}）的 {fmt_float(fraction * 100, 1)}%。",
                "设置 benchmark.threads（共享 CPU 时 1 个线程可能更快），并确认没有其他进程占用内存带宽。",
            )
        )
    return out


def findings(run: RunFiles) -> list[Finding]:
    """Problems in pipeline order: stages not run or failed, fallbacks, data, metrics, deployment, speed.

    Then every stage's own `notes` (what it skipped or fell back on, in its own words).
    """
    out = (
        _stage_findings(run)
        + _train_findings(run)
        + _data_findings(run)
        + _eval_findings(run)
        + _deploy_findings(run)
        + _benchmark_findings(run)
    )
    for name, zh in STAGE_NAMES_ZH.items():
        for note in run.stage(name).notes:
            out.append(Finding(f"{zh}阶段记录：{first_line(note, 300)}", None))
    return out


def conclusion(run: RunFiles) -> list[str]:
    """结论: training, evaluation, export/deployment and speed, one sentence each, with their numbers."""
    out = []
    tr, pr = run.stage("train"), run.stage("prepare")
    if tr.ok:
        n_train = pr.raw("splits", "train")
        on = f"在 {fmt_int(n_train)} 条训练样本上" if is_number(n_train) else ""
        method = "QLoRA" if tr.raw("quantization") == "4-bit NF4" else "LoRA"
        r, alpha = tr.raw("lora", "r"), tr.raw("lora", "alpha")
        steps, wall = tr.raw("global_step"), tr.raw("resources", "wall_time_s")
        sentence = f"{on}以 {method}（r={r}，alpha={alpha}）训练 {steps} 步"
        if is_number(wall):
            sentence += f"，用时 {fmt_duration(wall)}"
        for label, first, last in (
            ("训练 Loss", tr.raw("train_loss_first"), tr.raw("train_loss_last")),
            ("验证 Loss", tr.raw("eval_loss_first"), tr.raw("eval_loss_last")),
        ):
            if is_number(first) and is_number(last) and first:
                sentence += f"；{label} 由 {fmt_loss(first)} 变为 {fmt_loss(last)}（{fmt_signed((last - first) / first * 100, 1)}%）"
        out.append(sentence + "。")
    else:
        out.append(f"训练未完成：{tr.why_missing}，因此无法判断微调效果。")

    ev = run.stage("evaluate")
    if ev.ok:
        rows = [m for m in metrics(run) if is_number(m.get("before")) and is_number(m.get("after"))]
        verdicts = [direction(m["before"], m["after"], better_direction(m)) for m in rows]
        judged = [v for v in verdicts if v in ("变好", "变差", "持平")]
        better, worse = verdicts.count("变好"), verdicts.count("变差")
        key = [metric(run, k) for k in ("rougeL", "bleu4")]
        key_text = "，".join(metric_change(m) for m in key if m)
        samples = ev.raw("settings", "samples")
        on = f"测试集 {fmt_int(samples)} 条样本上" if is_number(samples) else "测试集上"
        sentence = f"{on}，{better}/{len(judged)} 项有优劣方向的指标变好、{worse} 项变差"
        if key_text:
            sentence += f"：{key_text}"
        out.append(sentence + "。")
        rouge = metric(run, "rougeL")
        if rouge and direction(rouge.get("before"), rouge.get("after")) == "变好" and better > worse:
            out.append("按“ROUGE-L 提升且变好的指标多于变差的指标”这一规则，本次微调有效。")
        elif rows:
            out.append("按“ROUGE-L 提升且变好的指标多于变差的指标”这一规则，本次微调的效果尚不能确认。")
    else:
        out.append(f"模型评估缺失：{ev.why_missing}，微调前后的效果未经测量。")

    ex, dp = run.stage("export"), run.stage("deploy")
    if ex.ok:
        quant, size = ex.raw("gguf", "quantization"), ex.raw("gguf", "size_bytes")
        size_text = f"（{fmt_bytes(size)}）" if is_number(size) else ""
        sentence = f"模型已导出为 {quant or '未记录量化类型的'} GGUF{size_text}"
    else:
        sentence = f"模型未导出：{ex.why_missing}"
    if dp.ok:
        status = dp.raw("status")
        if status == "deployed":
            sentence += f"，已部署到 Ollama（模型名 {dp.raw('model_name')}，API 测试{api_test_word(dp.raw('api_test', 'status'))}）"
        else:
            sentence += f"，未部署到 Ollama：{dp.raw('reason', default='deploy.json 未说明原因')}"
    else:
        sentence += f"；部署：{dp.why_missing}"
    out.append(sentence + "。")

    bm = run.stage("benchmark")
    if bm.ok:
        rows = [r for r in bm.raw("summary", default=[]) if isinstance(r, dict)]
        if rows:
            first = min(rows, key=lambda r: r.get("concurrency") or 0)
            tps = first.get("decode_tokens_per_s")
            e2e = (first.get("e2e_ms") or {}).get("p50") if isinstance(first.get("e2e_ms"), dict) else None
            parts = [f"{bm.raw('engine', default='未记录引擎')} 推理在并发 {first.get('concurrency')} 时"]
            parts.append(f"解码 {fmt_float(tps, 1)} tokens/秒" if is_number(tps) else "解码速度未记录")
            if is_number(e2e):
                parts.append(f"端到端延迟 p50 {fmt_float(e2e, 1)} ms")
            out.append("，".join(parts) + "。")
    else:
        out.append(f"推理性能未测量：{bm.why_missing}。")
    return out


def api_test_word(status: Any) -> str:
    """deploy.json api_test.status in Chinese."""
    return {"passed": "通过", "failed": "未通过", "not_run": "未运行"}.get(str(status), f"状态 {status}")
