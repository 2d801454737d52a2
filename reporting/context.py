"""The values of the report (`python run.py report`), one string per template slot.

Reads nothing itself: `build()` turns the loaded run folder (`reporting.runfiles.RunFiles`), the
report settings of the current config and the charts already drawn into the nested dict that
`templates/report.md.j2` renders. Every slot is either a value from an artifact, formatted with its
unit, or `未测量：<reason>`; nothing is filled in by guesswork. Strings are plain text (the
template escapes them); `MdRaw` marks the few pieces of Markdown built here (images, fenced
blocks, code spans).
"""

from __future__ import annotations

from typing import Any

from reporting import facts
from reporting.charts import Chart
from reporting.runfiles import STAGE_NAMES_ZH, STATUS_ZH, Measured, RunFiles, Stage, inside, missing
from reporting.text import (
    NOT_MEASURED,
    code,
    fenced,
    first_line,
    fmt_bytes,
    fmt_date,
    fmt_duration,
    fmt_float,
    fmt_general,
    fmt_int,
    fmt_loss,
    fmt_params,
    fmt_signed,
    fmt_time,
    image,
    is_number,
    shorten,
)
from trainer.config import ReportConfig

# Longest example text shown in full; the CSV holds every answer in full.
EXAMPLE_CHARS = 1500
API_ANSWER_CHARS = 80
# Longest reason or note quoted from a stage file.
REASON_CHARS = 300
# benchmark.json settings shown in the report, in this order.
BENCH_SETTING_KEYS = (
    "concurrency",
    "num_requests",
    "repetitions",
    "max_tokens",
    "num_ctx",
    "threads",
    "warmup_requests",
    "request_timeout_s",
    "temperature",
    "seed",
)

DROP_REASON_ZH = facts.DROP_REASON_ZH


def _nm(reason: str) -> str:
    return f"{NOT_MEASURED}{reason}"


def _with_reason(value: str, reason: Any) -> str:
    reason = shorten(" ".join(str(reason or "").split()), REASON_CHARS)
    return f"{value}（{reason}）" if reason else value


def _loss_change(first: Measured, last: Measured) -> str:
    if not first.ok:
        return first.text()
    if not last.ok:
        return last.text()
    text = f"{fmt_loss(first.value)} → {fmt_loss(last.value)}"
    if is_number(first.value) and first.value:
        text += f"（{fmt_signed((last.value - first.value) / first.value * 100, 1)}%）"
    return text


def _metric_series(run: RunFiles, key: str) -> list[tuple[int, float]]:
    return [(r["step"], float(r[key])) for r in run.metrics if is_number(r.get(key))]


def _project(run: RunFiles, report_cfg: ReportConfig) -> dict[str, Any]:
    tr = run.stage("train")
    base = tr.get("base_model").or_else(run.config_value("model", "name"))
    if tr.ok:
        quant = tr.raw("quantization")
        method = (
            "QLoRA（4-bit NF4 量化基础模型 + LoRA 适配器）"
            if quant == "4-bit NF4"
            else "LoRA（基础模型不量化）"
        )
        method += f"，训练后端 {tr.raw('backend', default='未记录')}"
    else:
        wants_4bit = run.config_value("model", "load_in_4bit")
        planned = "QLoRA" if wants_4bit.value is True else "LoRA"
        method = f"{planned}（配置值；实际方法{_nm(tr.why_missing)}）"
    started = (
        Measured((tr.record or {}).get("started_at"), "train.json 未记录 started_at")
        if tr.ok
        else missing(tr.why_missing)
    )
    git = run.env_value("git_commit")
    return {
        "name": report_cfg.project_name,
        "base_model": base.text(),
        "method": method,
        "train_date": started.text(fmt_date),
        "run_name": run.path.name,
        "git_commit": git.text(),
    }


def _dataset(run: RunFiles, report_cfg: ReportConfig) -> dict[str, Any]:
    pr = run.stage("prepare")
    splits = {k: pr.get("splits", k).text(lambda v: f"{fmt_int(v)} 条") for k in ("train", "val", "test")}
    inputs = pr.get("inputs")
    if inputs.ok and isinstance(inputs.value, list):
        sources = "；".join(
            f"{i.get('path')}（{i.get('format')}，{fmt_int(i['records'])} 条）"
            if is_number(i.get("records"))
            else f"{i.get('path')}（{i.get('format')}）"
            for i in inputs.value
            if isinstance(i, dict)
        )
        formats = sorted(
            {str(i.get("format")) for i in inputs.value if isinstance(i, dict) and i.get("format")}
        )
        format_type = "Alpaca 指令格式（instruction / input / output）"
        kinds = pr.raw("record_formats", default={}) or {}
        conversational = {k: v for k, v in kinds.items() if k != "alpaca" and is_number(v) and v}
        if conversational:
            names = {
                "sharegpt": "ShareGPT（conversations: from/value）",
                "messages": "messages（role/content）",
            }
            format_type += "；对话格式：" + "、".join(
                f"{names.get(k, k)} {fmt_int(v)} 条" for k, v in sorted(conversational.items())
            )
        if formats:
            format_type += f"，源文件格式：{'、'.join(formats)}"
    else:
        sources = inputs.text()
        format_type = inputs.text()
    identity = pr.get("identity_records")
    if identity.ok and isinstance(identity.value, dict):
        identity_text = "，".join(
            f"{zh} {fmt_int(identity.value[k])} 条"
            for k, zh in (("train", "训练"), ("val", "验证"), ("test", "测试"))
            if is_number(identity.value.get(k))
        )
    else:
        identity_text = identity.text()

    # 数据清洗
    if pr.ok:
        records_in, kept = pr.raw("records_in"), pr.raw("records_kept")
        dropped = pr.raw("dropped", default={})
        parts = [
            f"读入 {fmt_int(records_in) if is_number(records_in) else '未记录'} 条，"
            f"保留 {fmt_int(kept) if is_number(kept) else '未记录'} 条"
        ]
        drops = [
            f"{DROP_REASON_ZH.get(k, k)} {fmt_int(v)} 条"
            for k, v in (dropped.items() if isinstance(dropped, dict) else [])
            if is_number(v) and v
        ]
        parts.append("剔除：" + "、".join(drops) if drops else "未剔除任何记录")
        normalized = pr.raw("normalized")
        if is_number(normalized):
            parts.append(f"规范化（去除首尾空白、合并空白、Unicode NFC）{fmt_int(normalized)} 条")
        cleaning = "；".join(parts)
        if drops:
            cleaning += "（明细见 data/rejected.jsonl）"
        warning = pr.raw("drop_warning")
        if isinstance(warning, dict) and is_number(warning.get("share_pct")):
            cause = DROP_REASON_ZH.get(str(warning.get("main_cause")), str(warning.get("main_cause")))
            cleaning += (
                f"。⚠ 警告：共剔除 {fmt_int(warning['dropped'])} 条，占读入的 {warning['share_pct']}%"
                f"（超过 20%），主要原因：{cause} {fmt_int(warning['main_cause_count'])} 条；"
                f"实际参与训练的数据比原始数据少。处理办法："
                f"{facts.DROP_FIX_ZH.get(str(warning.get('main_cause')), '见 data/rejected.jsonl')}"
            )
    else:
        cleaning = _nm(pr.why_missing)

    # 数据增强: only what the prepare stage recorded (prepare.json results.augmented).
    if pr.ok:
        augmented = pr.raw("augmented")
        if augmented is None:
            augmentation = "未进行（prepare.json 未记录任何数据增强步骤）"
        elif not augmented:
            augmentation = "未进行（本次配置未启用数据增强）"
        else:
            augmentation = "；".join(
                f"{a.get('description', a.get('method'))}，新增 {a.get('records_added')} 条"
                for a in augmented
            )
    else:
        augmentation = _nm(pr.why_missing)

    # 格式转换
    if pr.ok:
        fmt_name = pr.raw("prompt_format", default="未记录")
        max_len = pr.raw("max_length")
        overlong = pr.raw("overlong", default="未记录")
        truncated = pr.raw("truncated")
        too_long = (pr.raw("dropped", default={}) or {}).get("too_long", 0)
        conversion = f"套用 {fmt_name} 对话模板，转为 prompt / completion 两段（只对回答计算 Loss）"
        multi_turn = pr.raw("multi_turn_records")
        if is_number(multi_turn) and multi_turn:
            conversion += f"；多轮对话 {fmt_int(multi_turn)} 条，每一轮助手回答都计算 Loss"
        if max_len is not None:
            conversion += f"；最大长度 {fmt_int(max_len)} tokens"
        conversion += f"；超长处理方式：{overlong}"
        if overlong == "drop":
            conversion += f"（丢弃 {fmt_int(too_long or 0)} 条）"
        elif is_number(truncated):
            conversion += f"（截断 {fmt_int(truncated)} 条）"
    else:
        conversion = _nm(pr.why_missing)

    lengths = []
    for label, path in (
        ("问题（字）", ("length_chars", "prompt")),
        ("回答（字）", ("length_chars", "output")),
        ("完整样本（tokens）", ("length_tokens", "total")),
    ):
        got = pr.get(*path)
        if got.ok and isinstance(got.value, dict):
            stats = got.value
            cells = [
                fmt_general(round(float(stats[k]), 1)) if is_number(stats.get(k)) else "未记录"
                for k in ("min", "mean", "p50", "p95", "max")
            ]
            lengths.append([label, *cells])
        else:
            lengths.append([label, got.text(), "", "", "", ""])

    return {
        "name": pr.get("dataset_name").text(),
        "sources": sources,
        "splits": splits,
        "identity": identity_text,
        "format_type": format_type,
        "prompt_format": pr.get("prompt_format").text(),
        "language": report_cfg.language,
        "domain": report_cfg.domain,
        "cleaning": cleaning,
        "augmentation": augmentation,
        "conversion": conversion,
        "lengths": lengths,
    }


def _config_source(run: RunFiles) -> tuple[bool, str]:
    """Whether the training tables show what train.json says was used (True) or the config's values."""
    tr = run.stage("train")
    if tr.ok:
        return True, "下表为训练阶段实际使用的设置（train.json）。"
    if run.config_error:
        return False, f"训练设置无法读取：{tr.why_missing}；{run.config_error}。"
    return False, f"{tr.why_missing}：下表为 config.resolved.yaml 中的配置值，不是实际使用值。"


def _training_config(run: RunFiles) -> dict[str, Any]:
    tr = run.stage("train")
    used, source_note = _config_source(run)

    def pick(train_path: tuple[str, ...], cfg_key: tuple[str, str] | None, fmt: Any = fmt_general) -> str:
        if used:
            return tr.get(*train_path).text(fmt)
        if cfg_key is None:
            return _nm(tr.why_missing)
        return run.config_value(*cfg_key).text(fmt)

    if used:
        quant = tr.get("quantization").text()
        reason = tr.raw("quantization_reason")
        quantization = _with_reason(quant, reason) if tr.get("quantization").ok else quant
        device = tr.get("device").text()
        detail = tr.raw("resources", "gpu_name") or tr.raw("resources", "cpu_model")
        if detail and str(detail) not in device:
            device += f"（{detail}）"
        backend = _with_reason(tr.get("backend").text(), tr.raw("backend_reason"))
        precision = _with_reason(tr.get("precision").text(), tr.raw("precision_reason"))
        total, trainable = tr.raw("params_total"), tr.raw("params_trainable")
        if is_number(total) and is_number(trainable) and total:
            params = (
                f"可训练 {fmt_params(trainable)}（{fmt_int(trainable)}）/ 总计 {fmt_params(total)}，"
                f"占 {fmt_float(trainable / total * 100, 3)}%"
            )
        else:
            params = tr.get("params_trainable").text(fmt_int)
        base_model = tr.get("base_model").text()
    else:
        why = _nm(tr.why_missing)
        wants = run.config_value("model", "load_in_4bit")
        quantization = (
            f"{'4-bit NF4' if wants.value else '无'}（配置值；实际{why}）" if wants.ok else wants.text()
        )
        device = why
        backend = run.config_value("train", "backend").text()
        precision = run.config_value("train", "precision").text()
        params = why
        base_model = run.config_value("model", "name").text()

    target = pick(("lora", "target_modules"), ("train", "target_modules"), lambda v: ", ".join(map(str, v)))
    hp = {
        "epochs": pick(("hyperparameters", "epochs"), ("train", "epochs")),
        "max_steps": pick(
            ("hyperparameters", "max_steps"),
            ("train", "max_steps"),
            lambda v: "不限（按 epochs）" if is_number(v) and v <= 0 else fmt_general(v),
        ),
        "batch_size": pick(("hyperparameters", "per_device_batch_size"), ("train", "per_device_batch_size")),
        "grad_accum": pick(
            ("hyperparameters", "gradient_accumulation_steps"), ("train", "gradient_accumulation_steps")
        ),
        "effective_batch": pick(("hyperparameters", "effective_batch_size"), None),
        "world_size": pick(("hyperparameters", "world_size"), None),
        "learning_rate": pick(("hyperparameters", "learning_rate"), ("train", "learning_rate")),
        "lr_scheduler": pick(("hyperparameters", "lr_scheduler"), ("train", "lr_scheduler")),
        "warmup_steps": pick(("hyperparameters", "warmup_steps"), ("train", "warmup_steps")),
        "max_length": pick(("hyperparameters", "max_length"), ("data", "max_length")),
        "optimizer": pick(("hyperparameters", "optimizer"), ("train", "optimizer")),
        "precision": precision,
        "seed": pick(("hyperparameters", "seed"), ("train", "seed")),
    }
    return {
        "source_note": source_note,
        "base_model": base_model,
        "quantization": quantization,
        "device": device,
        "backend": backend,
        "params": params,
        "lora": {
            "r": pick(("lora", "r"), ("train", "lora_r")),
            "alpha": pick(("lora", "alpha"), ("train", "lora_alpha")),
            "dropout": pick(("lora", "dropout"), ("train", "lora_dropout")),
            "target_modules": target,
        },
        "hp": hp,
    }


def _training(
    run: RunFiles, charts: dict[str, Chart | None], chart_reasons: dict[str, str]
) -> dict[str, Any]:
    tr = run.stage("train")
    train_series = _metric_series(run, "loss")
    eval_series = _metric_series(run, "eval_loss")
    # Values from train.json; the loss log stands in for a first/last value the stage did not record.
    log_first = (
        Measured(train_series[0][1]) if train_series else missing(run.metrics_error or "日志中无训练 Loss")
    )
    log_last = Measured(train_series[-1][1]) if train_series else log_first
    eval_first = (
        Measured(eval_series[0][1]) if eval_series else missing(run.metrics_error or "日志中无验证 Loss")
    )
    eval_last = Measured(eval_series[-1][1]) if eval_series else eval_first

    def first_of(key: str, fallback: Measured) -> Measured:
        got = tr.get(key)
        return got if got.ok or not tr.ok else got.or_else(fallback)

    resources = tr.get("resources", "wall_time_s")
    tokens, tps = tr.raw("resources", "trained_tokens"), tr.raw("resources", "tokens_per_s")
    if is_number(tokens) and is_number(tps):
        throughput = f"{fmt_int(tokens)} tokens，{fmt_float(tps, 1)} tokens/秒"
    else:
        throughput = tr.get("resources", "tokens_per_s").text(lambda v: f"{fmt_float(v, 1)} tokens/秒")
    resumed = tr.get("resumed_from")
    resumed_text = (
        ("否（从头训练）" if tr.ok and "resumed_from" in tr.results else resumed.text())
        if not resumed.ok
        else f"是，自 {resumed.value} 继续"
    )

    checkpoints = []
    best_step = tr.raw("best_checkpoint", "step")
    raw_ckpts = tr.raw("checkpoints", default=[])
    for c in raw_ckpts if isinstance(raw_ckpts, list) else []:
        if not isinstance(c, dict):
            continue
        checkpoints.append(
            [
                fmt_general(c.get("step")) if c.get("step") is not None else "未记录",
                fmt_loss(c["train_loss"]) if is_number(c.get("train_loss")) else "未记录",
                fmt_loss(c["eval_loss"]) if is_number(c.get("eval_loss")) else "未记录",
                str(c.get("path") or "未记录"),
                "★ 最佳" if best_step is not None and c.get("step") == best_step else "",
            ]
        )
    best = tr.get("best_checkpoint")
    if best.ok and isinstance(best.value, dict):
        b = best.value
        loss = fmt_loss(b["eval_loss"]) if is_number(b.get("eval_loss")) else "未记录"
        best_text = f"step {b.get('step')}，验证 Loss {loss}（{b.get('path') or '路径未记录'}）"
    else:
        best_text = best.text()
    if tr.ok and not checkpoints:
        checkpoints_note = "train.json 未记录任何检查点。"
    elif not tr.ok:
        checkpoints_note = _nm(tr.why_missing)
    else:
        checkpoints_note = ""

    chart = charts.get("loss")
    return {
        "chart": image(f"report_assets/{chart.file}", chart.caption) if chart else None,
        "chart_caption": chart.caption if chart else "",
        "chart_missing": _nm(chart_reasons.get("loss", "")) if not chart else "",
        "metrics_warning": run.metrics_error if run.metrics and run.metrics_error else "",
        "train_loss": _loss_change(
            first_of("train_loss_first", log_first), first_of("train_loss_last", log_last)
        ),
        "eval_loss": _loss_change(
            first_of("eval_loss_first", eval_first), first_of("eval_loss_last", eval_last)
        ),
        "wall_time": resources.text(fmt_duration),
        "stage_time": fmt_duration(tr.duration_s)
        if tr.ok and tr.duration_s is not None
        else _nm(tr.why_missing),
        "global_step": tr.get("global_step").text(fmt_int),
        "throughput": throughput,
        "resumed": resumed_text,
        "checkpoints": checkpoints,
        "checkpoints_note": checkpoints_note,
        "best": best_text,
    }


def _improvement_text(m: dict[str, Any]) -> str:
    before, after, improvement = m.get("before"), m.get("after"), m.get("improvement")
    if not is_number(improvement):
        reason = m.get("improvement_reason") or m.get("reason")
        if not reason:
            reason = (
                "微调前或微调后未测量"
                if not (is_number(before) and is_number(after))
                else "evaluate.json 未给出提升值"
            )
        return _nm(str(reason))
    kind = m.get("improvement_kind")
    text = f"{fmt_signed(improvement)}%" if kind == "relative_pct" else f"{fmt_signed(improvement)} 分"
    if kind == "points" and str(m.get("key", "")).endswith("_pct"):
        text = f"{fmt_signed(improvement)} 个百分点"
    verdict = facts.direction(before, after, facts.better_direction(m))
    return f"{text}（{verdict}）" if verdict else text


def _side(m: dict[str, Any], side: str) -> str:
    value = m.get(side)
    if is_number(value):
        return fmt_float(value, 4 if m.get("key") == "loss" else 2)
    return _nm(str(m.get(f"{side}_reason") or m.get("reason") or "evaluate.json 中该值为空，未说明原因"))


def _evaluation(run: RunFiles, assistant_name: str) -> dict[str, Any]:
    ev = run.stage("evaluate")
    rows = []
    definitions = []
    ordered = sorted(facts.metrics(run), key=lambda m: m.get("key") != "avg_answer_chars")
    for m in ordered:
        name = str(m.get("name_zh") or m.get("key"))
        if m.get("key") == "avg_answer_chars":
            name = "平均回答长度（字）" if "平均回答长度" not in name else name
        rows.append([name, _side(m, "before"), _side(m, "after"), _improvement_text(m)])
        definition = str(m.get("definition") or "").strip()
        ref = m.get("reference")
        extra = f"参考答案为 {fmt_float(ref)}" if is_number(ref) else ""
        direction_word = {True: "越高越好", False: "越低越好"}.get(facts.better_direction(m), "无优劣方向")
        definitions.append(
            f"{name}：{definition or 'evaluate.json 未给出定义'}（{direction_word}{'；' + extra if extra else ''}）"
        )
    if ev.ok and not rows:
        table_note = "evaluate.json 未记录任何指标。"
    elif not ev.ok:
        table_note = _nm(ev.why_missing)
    else:
        table_note = ""

    if ev.ok:
        s = ev.results.get("settings") if isinstance(ev.results.get("settings"), dict) else {}
        decoding = "采样" if s.get("do_sample") else "贪心解码"
        if s.get("do_sample"):
            decoding += (
                f"（temperature={fmt_general(s.get('temperature'))}，top_p={fmt_general(s.get('top_p'))}）"
            )
        samples = s.get("samples")
        csv_rows = (
            f"evaluation_results.csv 共 {fmt_int(run.eval_rows)} 行"
            if run.eval_rows is not None
            else run.eval_csv_error
        )
        settings = (
            f"测试集样本 {fmt_int(samples) if is_number(samples) else '未记录'} 条（{csv_rows}）；{decoding}，"
            f"max_new_tokens={fmt_general(s.get('max_new_tokens'))}，seed={fmt_general(s.get('seed'))}；"
            "微调前后使用相同的解码设置。"
        )
        judge = ev.results.get("judge")
        judge_text = (
            "未启用评审模型（评价与分析均由下述规则从指标得出）"
            if judge is None
            else f"评审模型：{first_line(str(judge), 200)}"
        )
        identity = ev.get("identity")
        if identity.ok and isinstance(identity.value, dict):
            i = identity.value
            identity_text = (
                f"{fmt_general(i.get('questions'))} 道身份问题中，回答含助手名称“{assistant_name}”的："
                f"微调前 {fmt_general(i.get('before_hits'))} 道，微调后 {fmt_general(i.get('after_hits'))} 道。"
            )
        else:
            identity_text = identity.text()
    else:
        settings = identity_text = _nm(ev.why_missing)
        judge_text = ""

    examples = []
    raw_examples = ev.raw("examples", default=[])
    for n, e in enumerate(raw_examples if isinstance(raw_examples, list) else [], start=1):
        if not isinstance(e, dict):
            continue
        question = str(e.get("instruction") or "")
        if str(e.get("input") or "").strip():
            question += "\n\n" + str(e["input"])
        kind = facts.EXAMPLE_KIND_ZH.get(str(e.get("kind")), "")
        title = f"示例 {n}" + (f"（{kind}，编号 {e.get('id')}）" if kind else f"（编号 {e.get('id')}）")
        examples.append(
            {
                "title": title,
                "question": fenced(shorten(question, EXAMPLE_CHARS)),
                "reference": fenced(shorten(str(e.get("reference") or "（无参考答案）"), EXAMPLE_CHARS)),
                "before": fenced(shorten(str(e.get("before") or "（空回答）"), EXAMPLE_CHARS)),
                "after": fenced(shorten(str(e.get("after") or "（空回答）"), EXAMPLE_CHARS)),
                "verdict": facts.example_verdict(e),
            }
        )
    if ev.ok and not examples:
        examples_note = "evaluate.json 未记录示例。"
    elif not ev.ok:
        examples_note = _nm(ev.why_missing)
    else:
        examples_note = ""
    return {
        "settings": settings,
        "judge": judge_text,
        "rows": rows,
        "table_note": table_note,
        "definitions": definitions,
        "identity": identity_text,
        "examples": examples,
        "examples_note": examples_note,
        "qualitative": facts.qualitative(run),
    }


def _deployment(run: RunFiles) -> dict[str, Any]:
    ex, dp = run.stage("export"), run.stage("deploy")
    gguf = ex.get("gguf")
    if gguf.ok and isinstance(gguf.value, dict):
        g = gguf.value
        file_type = g.get("file_type")
        fmt_text = "GGUF" + (f"（file_type {file_type}）" if file_type else "")
        quant = str(g.get("quantization") or "未记录")
        size = fmt_bytes(g["size_bytes"]) if is_number(g.get("size_bytes")) else "未记录"
        f16 = ex.raw("gguf_f16", "size_bytes")
        if is_number(f16) and is_number(g.get("size_bytes")) and g["size_bytes"]:
            size += f"（F16 GGUF {fmt_bytes(f16)}，压缩为 {fmt_float(g['size_bytes'] / f16 * 100, 1)}%）"
        gguf_path = str(g.get("path") or "未记录")
    else:
        fmt_text = quant = size = gguf_path = gguf.text()
    merged = ex.get("merged")
    if merged.ok and isinstance(merged.value, dict):
        mv = merged.value
        merged_text = f"{mv.get('path')}（{mv.get('dtype') or 'dtype 未记录'}，" + (
            f"{fmt_bytes(mv['size_bytes'])}）" if is_number(mv.get("size_bytes")) else "大小未记录）"
        )
    else:
        merged_text = merged.text()
    verification = ex.get("verification")
    if verification.ok and isinstance(verification.value, dict):
        v = verification.value
        verify_text = (
            f"llama.cpp 读取成功：架构 {v.get('architecture')}，{fmt_general(v.get('tensor_count'))} 个张量；"
            f"生成文本：“{shorten(' '.join(str(v.get('generated_text') or '').split()), 120)}”"
        )
    else:
        verify_text = verification.text()

    status = dp.get("status")
    reason = dp.raw("reason")
    if status.ok:
        status_text = {
            "deployed": "已部署",
            "not_deployed": "未部署",
            "failed": "部署失败",
        }.get(str(status.value), str(status.value))
        if status.value != "deployed":
            status_text += f"：{reason or 'deploy.json 未说明原因'}"
    else:
        status_text = status.text()
    api = dp.get("api_test")
    cases = []
    if api.ok and isinstance(api.value, dict):
        a = api.value
        raw_cases = a.get("cases") if isinstance(a.get("cases"), list) else []
        ok = sum(1 for c in raw_cases if isinstance(c, dict) and c.get("ok"))
        word = facts.api_test_word(a.get("status"))
        if a.get("status") == "not_run":
            api_text = f"未运行：{a.get('reason') or reason or 'deploy.json 未说明原因'}"
        else:
            api_text = f"{word}（{ok}/{len(raw_cases)} 个用例成功，POST /api/generate）"
        matches = a.get("matches_llamacpp")
        compare_reason = (
            (a.get("llamacpp") or {}).get("reason") if isinstance(a.get("llamacpp"), dict) else None
        )
        matches_text = {True: "一致", False: "不一致"}.get(
            matches,
            _nm(str(compare_reason or a.get("reason") or "deploy.json 中 matches_llamacpp 为空，未说明原因")),
        )
        for n, c in enumerate(raw_cases, start=1):
            if not isinstance(c, dict):
                continue
            tps = c.get("decode_tokens_per_s")
            cases.append(
                [
                    str(n),
                    shorten(" ".join(str(c.get("prompt") or "").split()), 60),
                    shorten(" ".join(str(c.get("answer") or "").split()), API_ANSWER_CHARS),
                    str(c.get("done_reason") or "未记录"),
                    fmt_general(c["eval_count"]) if is_number(c.get("eval_count")) else "未记录",
                    fmt_float(tps, 1) if is_number(tps) else "未记录",
                    "通过"
                    if c.get("ok")
                    else "失败：" + ("；".join(map(str, c.get("problems") or [])) or "未记录原因"),
                ]
            )
    else:
        api_text = matches_text = api.text()
    command = dp.raw("deploy_command")
    return {
        "format": fmt_text,
        "quantization": quant,
        "size": size,
        "gguf_path": gguf_path,
        "merged": merged_text,
        "verification": verify_text,
        "modelfile": ex.get("modelfile").text(),
        "model_name": dp.get("model_name").text(),
        "host": dp.get("host").text(),
        "status": status_text,
        "api_test": api_text,
        "matches": matches_text,
        "command": code(command) if command else None,
        "cases": cases,
    }


def _pctl(stats: Any, key: str) -> str:
    if isinstance(stats, dict) and is_number(stats.get(key)):
        return fmt_float(stats[key], 1)
    return "—"


def _resources(
    run: RunFiles, charts: dict[str, Chart | None], chart_reasons: dict[str, str]
) -> dict[str, Any]:
    tr, bm = run.stage("train"), run.stage("benchmark")
    no_gpu = not run.env_error and run.env.get("gpu") is None
    reserved = tr.get("resources", "peak_gpu_reserved_bytes", reason_key="gpu_reason")
    if not reserved.ok and tr.ok and no_gpu:
        reserved = missing(f"本次运行无GPU（env.json 中 gpu 为空；train.json：{reserved.reason}）")
    if reserved.ok:
        gpu_mem = f"峰值保留 {fmt_bytes(reserved.value)}"
        allocated = tr.raw("resources", "peak_gpu_allocated_bytes")
        if is_number(allocated):
            gpu_mem += f"，峰值分配 {fmt_bytes(allocated)}"
        gpu = run.env.get("gpu")
        if isinstance(gpu, dict) and is_number(gpu.get("memory_bytes")):
            gpu_mem += f"（{gpu.get('name')}，总显存 {fmt_bytes(gpu['memory_bytes'])}）"
    else:
        gpu_mem = reserved.text()
    rss = tr.get("resources", "peak_rss_bytes")
    memory = rss.text(lambda v: f"峰值 RSS {fmt_bytes(v)}")
    total_mem = run.env.get("memory_bytes")
    if rss.ok and is_number(total_mem):
        memory += f"（本机内存 {fmt_bytes(total_mem)}）"
    train_res = {
        "gpu_memory": gpu_mem,
        "memory": memory,
        "time": tr.get("resources", "wall_time_s").text(fmt_duration),
        "disk": tr.get("resources", "disk_bytes").text(lambda v: f"{fmt_bytes(v)}（适配器与检查点）"),
        "throughput": tr.get("resources", "tokens_per_s").text(lambda v: f"{fmt_float(v, 1)} tokens/秒"),
        "cpu": (
            f"{run.env.get('cpu_model') or '型号未记录'}，{fmt_general(run.env.get('cpu_count'))} 核"
            if run.env and run.env.get("cpu_count") is not None
            else run.env_value("cpu_model").text()
        ),
    }

    summary = [r for r in bm.raw("summary", default=[]) if isinstance(r, dict)]
    lowest = min(summary, key=lambda r: r.get("concurrency") or 0) if summary else None
    if bm.ok and lowest is not None:
        level = lowest.get("concurrency")
        tps = lowest.get("decode_tokens_per_s")
        speed = (
            f"{fmt_float(tps, 1)} tokens/秒（并发 {level}，单请求解码速度均值）"
            if is_number(tps)
            else _nm(lowest.get("decode_tokens_per_s_reason") or "benchmark.json 未记录解码速度")
        )
        ttft, e2e = lowest.get("ttft_ms"), lowest.get("e2e_ms")
        if isinstance(e2e, dict) and is_number(e2e.get("p50")):
            latency = f"端到端 p50 {_pctl(e2e, 'p50')} ms / p99 {_pctl(e2e, 'p99')} ms"
            if isinstance(ttft, dict) and is_number(ttft.get("p50")):
                latency += f"，首 token p50 {_pctl(ttft, 'p50')} ms"
            latency += f"（并发 {level}）"
        else:
            latency = _nm("benchmark.json 未记录延迟")
    elif bm.ok:
        speed = latency = _nm("benchmark.json 的 summary 为空")
    else:
        speed = latency = _nm(bm.why_missing)
    vram = bm.get("memory", "vram_bytes")
    if not vram.ok and bm.ok and no_gpu:
        vram = missing(f"本次运行无GPU（env.json 中 gpu 为空；benchmark.json：{vram.reason}）")
    engine = bm.get("engine").text()
    engine_reason = bm.raw("settings", "engine_reason")
    if bm.ok:
        model = bm.raw("model", default="模型未记录")
        quant = bm.raw("quantization")
        size = bm.raw("model_size_bytes")
        engine += (
            f"（{model}"
            + (f"，{quant}" if quant else "")
            + (f"，{fmt_bytes(size)}" if is_number(size) else "")
            + "）"
        )
        if engine_reason:
            engine += f"；选择原因：{engine_reason}"
        server_reason = bm.raw("engine_details", "server_reason")
        if isinstance(server_reason, str):
            engine += f"；服务器：{server_reason}"
    roof = bm.get("roofline")
    if roof.ok and isinstance(roof.value, dict) and is_number(roof.value.get("limit_tokens_per_s")):
        r = roof.value
        roofline = f"{fmt_float(r['limit_tokens_per_s'], 1)} tokens/秒"
        if (
            r.get("bound") == "compute"
            and is_number(r.get("peak_flops_per_s"))
            and is_number(r.get("params"))
        ):
            roofline += (
                f"（受算力限制：峰值 {fmt_float(r['peak_flops_per_s'] / 1e12, 2)} TFLOP/s ÷ "
                f"(2 × {fmt_params(r['params'])} 参数)）"
            )
        elif is_number(r.get("bandwidth_bytes_per_s")) and is_number(r.get("bytes_per_token")):
            roofline += (
                f"（受内存带宽限制：{fmt_float(r['bandwidth_bytes_per_s'] / 1e9, 1)} GB/s ÷ 每 token 读取 "
                f"{fmt_bytes(r['bytes_per_token'])}）"
            )
        if is_number(r.get("achieved_fraction")):
            roofline += f"，实测达到 {fmt_float(r['achieved_fraction'] * 100, 1)}%"
    elif roof.ok and isinstance(roof.value, dict):
        roofline = _nm(str(roof.value.get("reason") or "benchmark.json 的 roofline 未给出上限与原因"))
    else:
        roofline = roof.text()
    timing_check = _timing_check(bm.raw("timing_agreement")) if bm.ok else _nm(bm.why_missing)
    settings = bm.get("settings")
    if settings.ok and isinstance(settings.value, dict):
        shown = []
        for key in BENCH_SETTING_KEYS:
            value = settings.value.get(key)
            if isinstance(value, list):
                value = ",".join(map(str, value))
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                shown.append(f"{key}={fmt_general(value)}")
        settings_text = "，".join(shown) or "benchmark.json 的 settings 中没有已知设置项"
    else:
        settings_text = settings.text()
    levels = [
        [
            fmt_general(r.get("concurrency")),
            f"{fmt_general(r.get('requests'))}/{fmt_general(r.get('failures'))}",
            _pctl(r.get("ttft_ms"), "p50"),
            _pctl(r.get("ttft_ms"), "p99"),
            _pctl(r.get("tpot_ms"), "mean"),
            _pctl(r.get("e2e_ms"), "p50"),
            _pctl(r.get("e2e_ms"), "p99"),
            fmt_float(r["decode_tokens_per_s"], 1) if is_number(r.get("decode_tokens_per_s")) else "—",
            fmt_float(r["aggregate_tokens_per_s"], 1) if is_number(r.get("aggregate_tokens_per_s")) else "—",
            fmt_float(r["requests_per_s"], 2) if is_number(r.get("requests_per_s")) else "—",
        ]
        for r in summary
    ]
    bench_charts = [
        image(f"report_assets/{c.file}", c.caption)
        for key, c in charts.items()
        if c and (key in ("latency", "throughput") or key.startswith("benchmark_"))
    ]
    return {
        "train": train_res,
        "inference": {
            "engine": engine,
            "vram": vram.text(fmt_bytes),
            "server_rss": bm.get("memory", "server_peak_rss_bytes").text(fmt_bytes),
            "speed": speed,
            "latency": latency,
            "roofline": roofline,
            "timing_check": timing_check,
            "settings": settings_text,
        },
        "levels": levels,
        "levels_note": ""
        if levels
        else (_nm(bm.why_missing) if not bm.ok else "benchmark.json 的 summary 为空。"),
        "charts": bench_charts,
        "charts_missing": "" if bench_charts else _nm(chart_reasons.get("benchmark", bm.why_missing)),
    }


def _timing_check(agreement: Any) -> str:
    """Client-side vs server-reported timings (benchmark.json `timing_agreement`)."""
    if not isinstance(agreement, dict) or not agreement.get("requests"):
        reason = agreement.get("reason") if isinstance(agreement, dict) else None
        return _nm(f"推理服务器未报告自身计时（{reason or 'benchmark.json 无 timing_agreement'}）")
    parts = []
    for key, label, unit in (
        ("ttft_ms", "首 token 时间", " ms"),
        ("decode_tokens_per_s", "解码速度", " tokens/秒"),
    ):
        a = agreement.get(key)
        if isinstance(a, dict) and is_number(a.get("difference")):
            parts.append(
                f"{label}：客户端 {fmt_float(a['client_mean'], 1)}{unit}，服务端 {fmt_float(a['server_mean'], 1)}{unit}，"
                f"相差 {a['difference'] * 100:+.1f}%"
            )
    if not parts:
        return _nm("没有可对比的请求")
    return (
        f"并发 {fmt_general(agreement.get('concurrency'))}，{fmt_general(agreement['requests'])} 个请求；"
        + "；".join(parts)
    )


def _attachment(run: RunFiles, label: str, rel: Any, stage: Stage, extra: str = "") -> list[Any]:
    rel_text = str(rel)
    path = inside(run.path, rel_text)
    if path.is_dir():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        state = f"存在，{fmt_bytes(size)}"
        shown = rel_text.rstrip("/") + "/"
    elif path.is_file():
        state = f"存在，{fmt_bytes(path.stat().st_size)}"
        shown = rel_text
    else:
        state = "不存在" + ("" if stage.ok else f"（{stage.why_missing}）")
        shown = rel_text
    if extra and path.exists():
        state += f"，{extra}"
    return [label, code(shown), state]


def _attachments(run: RunFiles) -> list[list[Any]]:
    tr, ev, ex, bm = (run.stage(s) for s in ("train", "evaluate", "export", "benchmark"))
    rows = [
        _attachment(run, "训练日志", tr.raw("files", "log", default="logs/training.log"), tr),
        _attachment(run, "Loss 日志", tr.raw("files", "metrics", default="logs/metrics.jsonl"), tr),
        _attachment(
            run,
            "评估结果",
            ev.raw("csv", default="evaluation_results.csv"),
            ev,
            f"{fmt_int(run.eval_rows)} 行" if run.eval_rows is not None else "",
        ),
        _attachment(run, "模型文件", ex.raw("merged", "path", default="models/finetuned"), ex),
        _attachment(run, "LoRA 适配器", tr.raw("files", "adapter", default="adapter"), tr),
        _attachment(run, "TensorBoard日志", tr.raw("files", "tensorboard", default="runs"), tr),
    ]
    gguf = ex.raw("gguf", "path")
    if gguf:
        rows.append(_attachment(run, "GGUF 模型", gguf, ex))
    bench_csv = bm.raw("files", "csv")
    if bench_csv:
        rows.append(_attachment(run, "基准测试明细", bench_csv, bm))
    charts = bm.raw("files", "charts", default=[])
    for chart in charts if isinstance(charts, list) else []:
        rows.append(_attachment(run, "基准测试图表", chart, bm))
    return rows


def _stage_rows(run: RunFiles) -> tuple[list[list[str]], str]:
    rows = []
    total = 0.0
    for name, zh in STAGE_NAMES_ZH.items():
        st = run.stage(name)
        status = STATUS_ZH.get(st.status, st.status)
        if st.status in ("failed", "interrupted") and st.error:
            status += f"：{first_line(st.error, 80)}"
        duration = st.duration_s
        if duration is not None:
            total += duration
        headline = first_line(st.results.get("headline") or "", 100) if st.ok else ""
        rows.append(
            [
                f"{zh}（{name}）",
                status,
                fmt_time(st.started_at) if st.started_at else "—",
                fmt_duration(duration) if duration is not None else "—",
                headline or "—",
            ]
        )
    return rows, fmt_duration(total)


def _environment(run: RunFiles) -> list[list[str]]:
    gpu = run.env.get("gpu")
    if isinstance(gpu, dict):
        mem = fmt_bytes(gpu["memory_bytes"]) if is_number(gpu.get("memory_bytes")) else "显存未记录"
        gpu_text = f"{gpu.get('name')} × {gpu.get('count')}（{mem}，计算能力 {gpu.get('capability')}）"
    elif run.env_error:
        gpu_text = _nm(run.env_error)
    else:
        gpu_text = "无（env.json 中 gpu 为空：本次运行无GPU）"
    libs = run.env.get("libraries") if isinstance(run.env.get("libraries"), dict) else {}
    lib_text = "，".join(f"{k} {v}" for k, v in libs.items() if v) or run.env_value("libraries").text()
    return [
        ["记录时间", run.env_value("created_at").text(fmt_time)],
        ["Python", run.env_value("python").text()],
        ["平台", run.env_value("platform").text()],
        [
            "CPU",
            run.env_value("cpu_model").text()
            + (f"（{run.env['cpu_count']} 核）" if run.env.get("cpu_count") else ""),
        ],
        ["内存", run.env_value("memory_bytes").text(fmt_bytes)],
        ["GPU", gpu_text],
        ["代码版本（git）", run.env_value("git_commit").text()],
        ["主要库版本", lib_text],
    ]


def build(
    run: RunFiles,
    report_cfg: ReportConfig,
    charts: dict[str, Chart | None],
    chart_reasons: dict[str, str],
    generated_at: str,
) -> dict[str, Any]:
    """The template context: one entry per report section."""
    assistant = run.config_value("data", "assistant_name")
    findings = facts.findings(run)
    stage_rows, stage_total = _stage_rows(run)
    return {
        "project": _project(run, report_cfg),
        "dataset": _dataset(run, report_cfg),
        "config": _training_config(run),
        "training": _training(run, charts, chart_reasons),
        "evaluation": _evaluation(run, str(assistant.value) if assistant.ok else "（助手名称未记录）"),
        "deployment": _deployment(run),
        "resources": _resources(run, charts, chart_reasons),
        "problems": [f.problem for f in findings],
        "improvements": list(dict.fromkeys(f.improvement for f in findings if f.improvement)),
        "conclusion": facts.conclusion(run),
        "attachments": _attachments(run),
        "stages": stage_rows,
        "stages_total": stage_total,
        "environment": _environment(run),
        "warnings": run.warnings,
        "generated_at": generated_at,
        "author": report_cfg.author,
    }
