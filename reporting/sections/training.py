"""Report sections 训练配置 and 训练过程 (`python run.py report`).

Reads `train.json` through its type (`trainer.results.TrainResult`), the loss log
`logs/metrics.jsonl` and, when training did not complete, the configured values from
`config.resolved.yaml` (labelled as such). Every Chinese label is made here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reporting import wording
from reporting.charts import Chart
from reporting.runfiles import RunFiles
from reporting.sections.common import list_note, with_reason
from reporting.text import (
    fmt_duration,
    fmt_float,
    fmt_general,
    fmt_int,
    fmt_loss,
    fmt_params,
    fmt_signed,
    image,
    is_number,
    shown,
)
from trainer.results import BackendChoice, Checkpoint, NotMeasured, TrainResult, known, measured


def _loss_change(first: Any, last: Any) -> str:
    if not measured(first):
        return shown(first)
    if not measured(last):
        return shown(last)
    text = f"{fmt_loss(first)} → {fmt_loss(last)}"
    if is_number(first) and first:
        text += f"（{fmt_signed((last - first) / first * 100, 1)}%）"
    return text


def _metric_series(run: RunFiles, key: str) -> list[tuple[int, float]]:
    return [(r["step"], float(r[key])) for r in run.metrics if is_number(r.get(key))]


def _config_source(run: RunFiles) -> tuple[bool, str]:
    """Whether the training tables show what train.json says was used (True) or the config's values."""
    tr = run.train
    if tr.ok:
        return True, "下表为训练阶段实际使用的设置（train.json）。"
    if run.config_error:
        return False, f"训练设置无法读取：{tr.why_missing}；{run.config_error}。"
    return False, f"{tr.why_missing}：下表为 config.resolved.yaml 中的配置值，不是实际使用值。"


def _probe_speeds(probe: Any) -> str:
    parts = [
        f"{r.backend} {fmt_float(r.tokens_per_s, 1)}" if is_number(r.tokens_per_s) else f"{r.backend} 失败"
        for r in probe.runs
    ]
    if not parts:
        return ""
    how = (
        "沿用本机此前的测速缓存" if probe.cached is True else f"本次测速耗时 {fmt_float(probe.cost_s, 0)} 秒"
    )
    return f"实测训练吞吐 {'，'.join(parts)} tokens/秒，各训练 {fmt_general(probe.steps)} 步（首步预热不计），{how}"


def backend_choice_text(choice: BackendChoice) -> str:
    """Why this backend trained, in Chinese, from train.json's `backend_choice` code."""
    speeds = _probe_speeds(choice.probe)
    detail = str(choice.detail) if choice.detail else ""
    reason = {
        "config": "配置 train.backend 指定",
        "probe_faster": f"自动选择：本机测速更快（{speeds}）",
        "probe_other_failed": f"自动选择：另一后端测速失败（{speeds}；{detail}）",
        "probe_failed": f"自动选择：两个后端测速均失败，使用 peft（{detail}）",
        "unsloth_unavailable": f"自动选择：Unsloth 不可用，使用 peft（{detail}）",
        "cuda_default": "自动选择：CUDA GPU 上默认使用 Unsloth（未测速）",
        "not_probed": f"自动选择：未测速，使用 Unsloth（{detail}）",
    }.get(str(choice.reason))
    return reason or f"{choice.reason}"


UTILISATION_REASONS = {
    "four_bit": "4-bit 量化权重，未测量其反量化计算的矩阵乘峰值",
    "no_tokens_per_s": "没有训练吞吐",
}


def utilisation_text(tr: Any) -> str:
    """训练算力利用率: achieved model FLOP/s against the measured matmul peak in the training dtype."""
    u = tr.result.utilisation
    if not measured(u) and u.why in UTILISATION_REASONS:
        return shown(NotMeasured(UTILISATION_REASONS[u.why]))
    got = tr.value(u)
    if not measured(got) or not is_number(u.utilisation):
        return shown(got) if not measured(got) else shown(NotMeasured("train.json 未记录利用率"))
    return (
        f"{fmt_float(u.utilisation * 100, 1)}%（实际 {fmt_float(u.achieved_flops_per_s / 1e9, 1)} GFLOP/秒，"
        f"本机 {u.peak_dtype} 矩阵乘峰值 {fmt_float(u.peak_flops_per_s / 1e9, 1)} GFLOP/秒；"
        f"每个训练 token {fmt_float(u.model_flops_per_token / 1e6, 0)} MFLOP，不含注意力分数）"
    )


def _used_settings(run: RunFiles) -> dict[str, str]:
    """Model, quantization, device, backend, precision and parameters as train.json records them."""
    tr = run.train
    r = tr.result
    quant = tr.value(r.quantization)
    quant_why = wording.reason(r.quantization_code, r.quantization_reason)
    quantization = with_reason(shown(quant), quant_why) if measured(quant) else shown(quant)
    device = shown(tr.value(r.device))
    detail = r.resources.gpu_name or r.resources.cpu_model
    if detail and str(detail) not in device:
        device += f"（{detail}）"
    total, trainable = r.params_total, r.params_trainable
    if is_number(total) and is_number(trainable) and total:
        params = (
            f"可训练 {fmt_params(trainable)}（{fmt_int(trainable)}）/ 总计 {fmt_params(total)}，"
            f"占 {fmt_float(trainable / total * 100, 3)}%"
        )
    else:
        params = shown(tr.value(trainable), fmt_int)
    return {
        "base_model": shown(tr.value(r.base_model)),
        "quantization": quantization,
        "device": device,
        "backend": with_reason(shown(tr.value(r.backend)), backend_choice_text(r.backend_choice))
        if measured(r.backend_choice)
        else with_reason(shown(tr.value(r.backend)), wording.text(r.backend_reason)),
        "precision": with_reason(
            shown(tr.value(r.precision)), wording.reason(r.precision_code, r.precision_reason)
        ),
        "params": params,
    }


def _configured_settings(run: RunFiles) -> dict[str, str]:
    """The same rows from config.resolved.yaml, for a training that did not complete."""
    why = shown(NotMeasured(run.train.why_missing))
    wants = run.config_value("model", "load_in_4bit")
    return {
        "base_model": shown(run.config_value("model", "name")),
        "quantization": (
            f"{'4-bit NF4' if wants else '无'}（配置值；实际{why}）" if measured(wants) else shown(wants)
        ),
        "device": why,
        "backend": shown(run.config_value("train", "backend")),
        "precision": shown(run.config_value("train", "precision")),
        "params": why,
    }


def training_config(run: RunFiles) -> dict[str, Any]:
    """The 训练配置 section: settings, LoRA and hyperparameters (used values, else configured ones)."""
    tr = run.train
    used, source_note = _config_source(run)
    lora, hp = tr.result.lora, tr.result.hyperparameters

    def pick(value: Any, cfg_key: tuple[str, str] | None, fmt: Callable[[Any], str] = fmt_general) -> str:
        if used:
            return shown(tr.value(value), fmt)
        if cfg_key is None:
            return shown(NotMeasured(tr.why_missing))
        return shown(run.config_value(*cfg_key), fmt)

    settings = _used_settings(run) if used else _configured_settings(run)
    hyper = {
        "epochs": pick(hp.epochs, ("train", "epochs")),
        "max_steps": pick(
            hp.max_steps,
            ("train", "max_steps"),
            lambda v: "不限（按 epochs）" if is_number(v) and v <= 0 else fmt_general(v),
        ),
        "batch_size": pick(hp.per_device_batch_size, ("train", "per_device_batch_size")),
        "grad_accum": pick(hp.gradient_accumulation_steps, ("train", "gradient_accumulation_steps")),
        "effective_batch": pick(hp.effective_batch_size, None),
        "world_size": pick(hp.world_size, None),
        "learning_rate": pick(hp.learning_rate, ("train", "learning_rate")),
        "lr_scheduler": pick(hp.lr_scheduler, ("train", "lr_scheduler")),
        "warmup_steps": pick(hp.warmup_steps, ("train", "warmup_steps")),
        "max_length": pick(hp.max_length, ("data", "max_length")),
        "optimizer": pick(hp.optimizer, ("train", "optimizer")),
        "precision": settings["precision"],
        "seed": pick(hp.seed, ("train", "seed")),
    }
    return {
        "source_note": source_note,
        "base_model": settings["base_model"],
        "quantization": settings["quantization"],
        "device": settings["device"],
        "backend": settings["backend"],
        "params": settings["params"],
        "lora": {
            "r": pick(lora.r, ("train", "lora_r")),
            "alpha": pick(lora.alpha, ("train", "lora_alpha")),
            "dropout": pick(lora.dropout, ("train", "lora_dropout")),
            "target_modules": pick(
                lora.target_modules, ("train", "target_modules"), lambda v: ", ".join(map(str, v))
            ),
        },
        "hp": hyper,
    }


def _checkpoint_rows(r: TrainResult) -> list[list[str]]:
    best_step = known(r.best_checkpoint.step, None)
    return [
        [
            fmt_general(c.step) if measured(c.step) else "未记录",
            fmt_loss(c.train_loss) if is_number(c.train_loss) else "未记录",
            fmt_loss(c.eval_loss) if is_number(c.eval_loss) else "未记录",
            str(c.path or "未记录"),
            "★ 最佳" if best_step is not None and known(c.step, None) == best_step else "",
        ]
        for c in r.checkpoints
    ]


def _best_text(best: Any) -> str:
    if isinstance(best, Checkpoint):
        loss = fmt_loss(best.eval_loss) if is_number(best.eval_loss) else "未记录"
        return f"step {known(best.step, None)}，验证 Loss {loss}（{best.path or '路径未记录'}）"
    return shown(best)


def _losses(run: RunFiles) -> tuple[str, str]:
    """训练 / 验证 Loss first → last; the loss log stands in for a value train.json did not record."""
    tr = run.train
    r = tr.result
    train_series = _metric_series(run, "loss")
    eval_series = _metric_series(run, "eval_loss")
    log_first = train_series[0][1] if train_series else NotMeasured(run.metrics_error or "日志中无训练 Loss")
    log_last = train_series[-1][1] if train_series else log_first
    eval_first = eval_series[0][1] if eval_series else NotMeasured(run.metrics_error or "日志中无验证 Loss")
    eval_last = eval_series[-1][1] if eval_series else eval_first

    def first_of(value: Any, fallback: Any) -> Any:
        got = tr.value(value)
        return known(got, fallback) if tr.ok else got

    return (
        _loss_change(first_of(r.train_loss_first, log_first), first_of(r.train_loss_last, log_last)),
        _loss_change(first_of(r.eval_loss_first, eval_first), first_of(r.eval_loss_last, eval_last)),
    )


def training(run: RunFiles, charts: dict[str, Chart | None], chart_reasons: dict[str, str]) -> dict[str, Any]:
    """The 训练过程 section: loss curve, losses, time, throughput, resumption and checkpoints."""
    tr = run.train
    r = tr.result
    tokens, tps = r.resources.trained_tokens, r.resources.tokens_per_s
    if is_number(tokens) and is_number(tps):
        throughput = f"{fmt_int(tokens)} tokens，{fmt_float(tps, 1)} tokens/秒"
    else:
        throughput = shown(tr.value(tps), lambda v: f"{fmt_float(v, 1)} tokens/秒")
    resumed = tr.value(r.resumed_from)
    if measured(resumed):
        resumed_text = f"是，自 {resumed} 继续"
    else:  # null means trained from scratch; absent means train.json did not say
        resumed_text = "否（从头训练）" if tr.ok and not r.resumed_from.absent else shown(resumed)
    checkpoints = _checkpoint_rows(r) if tr.ok else []
    checkpoints_note = list_note(tr, checkpoints, "train.json 未记录任何检查点。")
    train_loss, eval_loss = _losses(run)
    chart = charts.get("loss")
    return {
        "chart": image(f"report_assets/{chart.file}", chart.caption) if chart else None,
        "chart_caption": chart.caption if chart else "",
        "chart_missing": shown(NotMeasured(chart_reasons.get("loss", ""))) if not chart else "",
        "metrics_warning": run.metrics_error if run.metrics and run.metrics_error else "",
        "train_loss": train_loss,
        "eval_loss": eval_loss,
        "wall_time": shown(tr.value(r.resources.wall_time_s), fmt_duration),
        "stage_time": fmt_duration(tr.duration_s)
        if tr.ok and tr.duration_s is not None
        else shown(NotMeasured(tr.why_missing)),
        "global_step": shown(tr.value(r.global_step), fmt_int),
        "throughput": throughput,
        "utilisation": utilisation_text(tr) if tr.ok else shown(NotMeasured(tr.why_missing)),
        "resumed": resumed_text,
        "checkpoints": checkpoints,
        "checkpoints_note": checkpoints_note,
        "best": _best_text(tr.value(r.best_checkpoint)),
    }
