"""Rule-based 问题与改进 of `python run.py report`: what went wrong or fell back, and what to do.

Reads nothing itself: each rule takes the loaded run folder (`reporting.runfiles.RunFiles`, whose
stage results are the typed `trainer.results` objects) and returns Chinese findings that quote the
numbers they rest on. The thresholds below are the whole of the judgement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reporting import wording
from reporting.facts import DROP_REASON_ZH, metric, metric_change, metrics
from reporting.runfiles import RunFiles
from reporting.sections.training import backend_choice_text
from reporting.text import (
    first_line,
    fmt_duration,
    fmt_float,
    fmt_general,
    fmt_int,
    fmt_loss,
    is_number,
    verbatim,
)
from trainer.results import known, measured

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


@dataclass
class Finding:
    """One problem found in the files and, where a rule knows one, the improvement it suggests."""

    problem: str
    improvement: str | None = None


def _stage_findings(run: RunFiles) -> list[Finding]:
    out = []
    for st in run.stages.values():
        name, zh = st.name, st.name_zh
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


# train.json `backend_choice` codes that mean the wanted backend could not train (older runs have none)
FALLBACK_CHOICES = ("unsloth_unavailable", "probe_other_failed", "probe_failed")


def _train_findings(run: RunFiles) -> list[Finding]:
    tr = run.train
    r = tr.result
    if not tr.ok:
        return []
    out = []
    requested_backend = known(run.config_value("train", "backend"), None)
    backend = known(r.backend, None)
    choice = r.backend_choice
    # A fallback, not a choice: `auto` measuring the other backend faster is not a problem.
    fell_back = choice.reason in FALLBACK_CHOICES if measured(choice) else True
    if requested_backend in ("unsloth", "auto") and backend and backend != "unsloth" and fell_back:
        why = backend_choice_text(choice) if measured(choice) else wording.text(r.backend_reason)
        out.append(
            Finding(
                f"训练后端回退为 {backend}（配置 train.backend={requested_backend}）："
                f"{why or 'train.json 未说明原因'}。",
                "安装可用的 Unsloth（或在 GPU 机器上运行）以使用其优化内核。",
            )
        )
    wants_4bit = run.config_value("model", "load_in_4bit") is True
    quant = known(r.quantization, None)
    if wants_4bit and quant != "4-bit NF4":
        out.append(
            Finding(
                f"配置要求 4-bit QLoRA（model.load_in_4bit=true），实际量化为 {quant or '未记录'}："
                f"{wording.reason(r.quantization_code, r.quantization_reason) or 'train.json 未说明原因'}。",
                "在带 CUDA GPU 的机器上训练以启用 4-bit NF4 量化，降低显存占用。",
            )
        )
    precision = r.precision
    if precision == "fp32":
        wall = r.resources.wall_time_s
        took = f"，本次训练用时 {fmt_duration(wall)}" if is_number(wall) else ""
        out.append(
            Finding(
                f"未使用混合精度训练（精度 fp32）：{wording.reason(r.precision_code, r.precision_reason) or 'train.json 未说明原因'}{took}。",
                "在支持 bf16/fp16 的 GPU 上训练，可显著缩短训练时间并减少内存。",
            )
        )
    if run.has_gpu is False:
        tps = r.resources.tokens_per_s
        speed = f"，训练吞吐 {fmt_float(tps, 1)} tokens/秒" if is_number(tps) else ""
        cpu = run.env.cpu_model or "未记录型号"
        cores = run.env.cpu_count
        out.append(
            Finding(
                f"本次运行无 GPU（env.json 中 gpu 为空）：训练在 CPU（{cpu}，{cores if cores else '?'} 核）上进行{speed}。",
                None,
            )
        )
    # Overfitting: the last validation loss is clearly above the lowest one.
    evals = [(row["step"], row["eval_loss"]) for row in run.metrics if is_number(row.get("eval_loss"))]
    if len(evals) >= 3:
        best_step, best_loss = min(evals, key=lambda p: p[1])
        last_step, last_loss = evals[-1]
        if last_loss > best_loss * OVERFIT_RATIO:
            best = known(r.best_checkpoint.step, None)
            dropout = known(r.lora.dropout, None)
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
    pr = run.prepare
    if not pr.ok:
        return []
    out = []
    records_in = pr.result.records_in
    dropped = known(pr.result.dropped, {})
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
    train_n = pr.result.splits.train
    if is_number(train_n) and train_n < SMALL_TRAIN_SPLIT:
        out.append(
            Finding(
                f"训练集仅 {fmt_int(train_n)} 条（少于 {SMALL_TRAIN_SPLIT} 条）。",
                "扩充高质量的领域问答数据，再比较测试集指标。",
            )
        )
    return out


def _eval_findings(run: RunFiles) -> list[Finding]:
    ev = run.evaluate
    if not ev.ok:
        return []
    out = []
    lr = known(run.train.result.hyperparameters.learning_rate, None)
    for m in metrics(run):
        if m.key == "hit_max_tokens_pct":
            continue  # its own rule below
        if known(m.significance, None) == "worsened":  # 95 % interval below 0, not noise
            out.append(
                Finding(
                    f"微调后指标显著下降（95% 置信区间整体低于 0）：{metric_change(m)}。",
                    "对照 evaluation_results.csv 中该指标下降的样本检查训练数据"
                    + (f"，并尝试降低学习率（当前 {fmt_general(lr)}）" if lr is not None else "")
                    + "。",
                )
            )
    hit = metric(run, "hit_max_tokens_pct")
    max_new = known(ev.result.settings.max_new_tokens, None)
    if hit and is_number(hit.after) and hit.after > TRUNCATION_PCT:
        out.append(
            Finding(
                f"微调后 {fmt_float(hit.after, 1)}% 的回答达到生成上限"
                f"（max_new_tokens={max_new if max_new is not None else '未记录'}）被截断，超过 {TRUNCATION_PCT:g}%。",
                "提高 evaluate.max_new_tokens，或检查回答是否缺少结束标记（模板 / stop 设置）。",
            )
        )
    failures = ev.result.failures
    count = len(failures) if isinstance(failures, list) else failures
    if is_number(count) and count > 0:
        out.append(Finding(f"评估中有 {fmt_int(count)} 条样本生成失败（evaluate.json failures）。", None))
    return out


def _deploy_findings(run: RunFiles) -> list[Finding]:
    dp = run.deploy
    r = dp.result
    if not dp.ok:
        return []
    out = []
    status = r.status
    reason = wording.reason(r.reason_code, r.reason) or "deploy.json 未说明原因"
    if status == "not_deployed":
        out.append(
            Finding(
                f"模型未部署到 Ollama：{reason}。",
                "安装并启动 Ollama（“ollama serve”），然后运行 “python run.py deploy”。",
            )
        )
    elif status == "failed":
        out.append(Finding(f"Ollama 部署失败：{reason}。", "按错误信息修复后运行 “python run.py deploy”。"))
    return out + _api_findings(r.api_test)


def _api_findings(a: Any) -> list[Finding]:
    """The API test's failures (deploy.json api_test.failures) and the answers at the limit."""
    if not measured(a) or a.status == "not_run":
        return []
    out = []
    failures = list(a.failures)
    cases = list(a.cases)
    if "template_mismatch" in failures:
        t = a.template
        out.append(
            Finding(
                f"Ollama 实际使用的提示 token 与训练格式不同（第 {known(t.case, '?')} 个请求，"
                f"{fmt_general(t.matching_tokens)}/{fmt_general(t.expected_tokens)} 个 token 相同）。",
                "Modelfile 的 TEMPLATE/SYSTEM 没有复现训练时的对话格式：运行 “python run.py export --force” "
                "重新生成 Modelfile，再运行 “python run.py deploy”。",
            )
        )
    errors = [c for c in cases if "request_failed" in c.problems]
    if errors:
        out.append(
            Finding(
                f"API 测试中 {len(errors)}/{len(cases)} 个请求失败（Ollama 的错误：{verbatim(first_line(str(errors[0].error)))}）。",
                "查看 Ollama 服务日志（如 “journalctl -u ollama”）后重新运行 “python run.py deploy”。",
            )
        )
    if "no_stop" in failures:
        out.append(
            Finding(
                "所有回答都达到 num_predict 上限，没有一个以停止标记结束。",
                "检查 Modelfile 的 stop 参数与训练格式的结束标记（prompt_format.json 的 stop）是否一致。",
            )
        )
    elif measured(a.stops) and is_number(a.stops.at_limit) and a.stops.at_limit:
        out.append(
            Finding(
                f"{fmt_int(a.stops.at_limit)}/{len(cases)} 个回答达到 num_predict 上限"
                "（其他回答以停止标记结束：停止标记有效，这是模型本身的行为）。",
                "增加训练轮数或训练数据，让模型学会在回答结束时输出结束标记；或提高 deploy.num_predict。",
            )
        )
    if "no_chinese" in failures:
        out.append(Finding("API 测试的回答都不含中文。", "检查训练数据与系统提示是否为中文。"))
    return out


def _benchmark_findings(run: RunFiles) -> list[Finding]:
    bm = run.benchmark
    r = bm.result
    if not bm.ok:
        return []
    out = []
    for row in r.summary:
        failures, requests = row.failures, known(row.requests, None)
        if is_number(failures) and failures > 0:
            out.append(
                Finding(
                    f"并发 {known(row.concurrency, None)} 时 {fmt_int(failures)}/{fmt_int(requests or 0)} 个请求失败。",
                    "提高 benchmark.request_timeout_s 或降低并发数后重新测试。",
                )
            )
    if r.partial is True:
        out.append(
            Finding(
                f"基准测试结果不完整：{wording.text(r.partial_reason) or 'benchmark.json 未说明原因'}。",
                "重新运行 “python run.py benchmark --force” 得到完整结果。",
            )
        )
    fraction = r.roofline.achieved_fraction
    limit = r.roofline.limit_tokens_per_s
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
    for st in run.stages.values():
        zh = st.name_zh
        english = [first_line(n, 300) for n in st.notes]
        for note in wording.notes(st.result.note_codes if st.ok else None, english):
            if not any(note in f.problem for f in out):  # a rule above already said it
                out.append(Finding(f"{zh}阶段记录：{note}", None))
    return out
