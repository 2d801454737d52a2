"""Report section 资源与性能 (`python run.py report`): training resources and inference speed.

Reads `train.json`, `benchmark.json` (through `trainer.results.TrainResult` / `BenchmarkResult`) and
`env.json` (`EnvInfo`): memory, time, throughput, the benchmark's latency and speed per concurrency
level, the roofline limit and the client/server timing check. Chinese labels are made here.
"""

from __future__ import annotations

from typing import Any

from reporting import wording
from reporting.charts import Chart
from reporting.runfiles import RunFiles
from reporting.text import (
    fmt_bytes,
    fmt_duration,
    fmt_float,
    fmt_general,
    fmt_params,
    image,
    is_number,
    shown,
)
from trainer.results import BenchmarkResult, LevelSummary, NotMeasured, Roofline, known, measured

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


def _pctl(stats: Any, key: str) -> str:
    value = getattr(stats, key)  # a NotMeasured `stats` gives a NotMeasured value
    return fmt_float(value, 1) if is_number(value) else "—"


def _num(value: Any, digits: int) -> str:
    return fmt_float(value, digits) if is_number(value) else "—"


def _train_resources(run: RunFiles) -> dict[str, str]:
    tr = run.train
    res = tr.result.resources
    no_gpu = run.has_gpu is False
    reserved = tr.value(res.peak_gpu_reserved_bytes)
    if not measured(reserved) and tr.ok and no_gpu:
        reserved = NotMeasured(f"本次运行无GPU（env.json 中 gpu 为空；train.json：{reserved.why}）")
    if measured(reserved):
        gpu_mem = f"峰值保留 {fmt_bytes(reserved)}"
        if is_number(res.peak_gpu_allocated_bytes):
            gpu_mem += f"，峰值分配 {fmt_bytes(res.peak_gpu_allocated_bytes)}"
        gpu = run.env.gpu
        if measured(gpu) and is_number(gpu.memory_bytes):
            gpu_mem += f"（{known(gpu.name, None)}，总显存 {fmt_bytes(gpu.memory_bytes)}）"
    else:
        gpu_mem = shown(reserved)
    rss = tr.value(res.peak_rss_bytes)
    memory = shown(rss, lambda v: f"峰值 RSS {fmt_bytes(v)}")
    if measured(rss) and is_number(run.env.memory_bytes):
        memory += f"（本机内存 {fmt_bytes(run.env.memory_bytes)}）"
    env = run.env
    return {
        "gpu_memory": gpu_mem,
        "memory": memory,
        "time": shown(tr.value(res.wall_time_s), fmt_duration),
        "disk": shown(tr.value(res.disk_bytes), lambda v: f"{fmt_bytes(v)}（适配器与检查点）"),
        "throughput": shown(tr.value(res.tokens_per_s), lambda v: f"{fmt_float(v, 1)} tokens/秒"),
        "cpu": (
            f"{env.cpu_model or '型号未记录'}，{fmt_general(env.cpu_count)} 核"
            if measured(env.cpu_count)
            else shown(run.env_value(env.cpu_model))
        ),
    }


def _speed_and_latency(run: RunFiles, summary: list[LevelSummary]) -> tuple[str, str]:
    """Decode speed and latency at the lowest concurrency level."""
    bm = run.benchmark
    if not bm.ok:
        return shown(NotMeasured(bm.why_missing)), shown(NotMeasured(bm.why_missing))
    if not summary:
        return shown(NotMeasured("benchmark.json 的 summary 为空")), shown(
            NotMeasured("benchmark.json 的 summary 为空")
        )
    lowest = min(summary, key=lambda r: known(r.concurrency, 0) or 0)
    level = known(lowest.concurrency, None)
    tps = lowest.decode_tokens_per_s
    speed = (
        f"{fmt_float(tps, 1)} tokens/秒（并发 {level}，单请求解码速度均值）"
        if is_number(tps)
        else shown(
            NotMeasured(
                wording.text(tps.why if isinstance(tps, NotMeasured) else "")
                or "benchmark.json 未记录解码速度"
            )
        )
    )
    ttft, e2e = lowest.ttft_ms, lowest.e2e_ms
    if is_number(e2e.p50):
        latency = f"端到端 p50 {_pctl(e2e, 'p50')} ms / p99 {_pctl(e2e, 'p99')} ms"
        if is_number(ttft.p50):
            latency += f"，首 token p50 {_pctl(ttft, 'p50')} ms"
        latency += f"（并发 {level}）"
    else:
        latency = shown(NotMeasured("benchmark.json 未记录延迟"))
    return speed, latency


def _engine(run: RunFiles) -> str:
    bm = run.benchmark
    r = bm.result
    engine = shown(bm.value(r.engine))
    if not bm.ok:
        return engine
    quant, size = r.quantization, r.model_size_bytes
    engine += (
        f"（{known(r.model, '模型未记录')}"
        + (f"，{quant}" if quant else "")
        + (f"，{fmt_bytes(size)}" if is_number(size) else "")
        + "）"
    )
    if r.settings.engine_reason:
        engine += f"；选择原因：{wording.reason(r.settings.engine_code, r.settings.engine_reason)}"
    if isinstance(r.engine_details.server_reason, str):
        engine += f"；服务器：{wording.text(r.engine_details.server_reason)}"
    return engine


def _roofline(run: RunFiles) -> str:
    """The decode speed limit the machine allows (memory bandwidth or compute) and the share reached."""
    roof = run.benchmark.value(run.benchmark.result.roofline)
    if not isinstance(roof, Roofline):
        return shown(roof)
    r = roof
    if not is_number(r.limit_tokens_per_s):
        return shown(NotMeasured(wording.text(r.reason) or "benchmark.json 的 roofline 未给出上限与原因"))
    text = f"{fmt_float(r.limit_tokens_per_s, 1)} tokens/秒"
    if r.bound == "compute" and is_number(r.peak_flops_per_s) and is_number(r.params):
        text += (
            f"（受算力限制：峰值 {fmt_float(r.peak_flops_per_s / 1e12, 2)} TFLOP/s ÷ "
            f"(2 × {fmt_params(r.params)} 参数)）"
        )
    elif is_number(r.bandwidth_bytes_per_s) and is_number(r.bytes_per_token):
        text += (
            f"（受内存带宽限制：{fmt_float(r.bandwidth_bytes_per_s / 1e9, 1)} GB/s ÷ 每 token 读取 "
            f"{fmt_bytes(r.bytes_per_token)}）"
        )
    if is_number(r.achieved_fraction):
        text += f"，实测达到 {fmt_float(r.achieved_fraction * 100, 1)}%"
    return text


def _timing_check(r: BenchmarkResult) -> str:
    """Client-side vs server-reported timings (benchmark.json `timing_agreement`)."""
    agreement = r.timing_agreement
    if not measured(agreement) or not agreement.requests:
        reason = wording.text(agreement.reason) if measured(agreement) else ""
        return shown(
            NotMeasured(f"推理服务器未报告自身计时（{reason or 'benchmark.json 无 timing_agreement'}）")
        )
    parts = []
    for pair, label, unit in (
        (agreement.ttft_ms, "首 token 时间", " ms"),
        (agreement.decode_tokens_per_s, "解码速度", " tokens/秒"),
    ):
        if is_number(pair.difference):
            parts.append(
                f"{label}：客户端 {fmt_float(pair.client_mean, 1)}{unit}，服务端 {fmt_float(pair.server_mean, 1)}{unit}，"
                f"相差 {pair.difference * 100:+.1f}%"
            )
    if not parts:
        return shown(NotMeasured("没有可对比的请求"))
    return (
        f"并发 {fmt_general(known(agreement.concurrency, None))}，{fmt_general(agreement.requests)} 个请求；"
        + "；".join(parts)
    )


def _settings_text(run: RunFiles) -> str:
    settings = run.benchmark.value(run.benchmark.result.settings)
    if not measured(settings):
        return shown(settings)
    parts = []
    for key in BENCH_SETTING_KEYS:
        value = getattr(settings, key)
        if isinstance(value, list):
            value = ",".join(map(str, value))
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            parts.append(f"{key}={fmt_general(value)}")
    return "，".join(parts) or "benchmark.json 的 settings 中没有已知设置项"


def _level_row(r: LevelSummary) -> list[str]:
    return [
        fmt_general(known(r.concurrency, None)),
        f"{fmt_general(known(r.requests, None))}/{fmt_general(known(r.failures, None))}",
        _pctl(r.ttft_ms, "p50"),
        _pctl(r.ttft_ms, "p99"),
        _pctl(r.tpot_ms, "mean"),
        _pctl(r.e2e_ms, "p50"),
        _pctl(r.e2e_ms, "p99"),
        _num(r.decode_tokens_per_s, 1),
        _num(r.aggregate_tokens_per_s, 1),
        _num(r.requests_per_s, 2),
    ]


def resources(
    run: RunFiles, charts: dict[str, Chart | None], chart_reasons: dict[str, str]
) -> dict[str, Any]:
    """The 资源与性能 section's slots."""
    bm = run.benchmark
    summary = list(bm.result.summary) if bm.ok else []
    vram = bm.value(bm.result.memory.vram_bytes)
    if not measured(vram) and bm.ok and run.has_gpu is False:
        vram = NotMeasured(f"本次运行无GPU（env.json 中 gpu 为空；benchmark.json：{vram.why}）")
    speed, latency = _speed_and_latency(run, summary)
    levels = [_level_row(r) for r in summary]
    bench_charts = [
        image(f"report_assets/{c.file}", c.caption)
        for key, c in charts.items()
        if c and (key in ("latency", "throughput") or key.startswith("benchmark_"))
    ]
    return {
        "train": _train_resources(run),
        "inference": {
            "engine": _engine(run),
            "vram": shown(vram, fmt_bytes),
            "server_rss": shown(bm.value(bm.result.memory.server_peak_rss_bytes), fmt_bytes),
            "speed": speed,
            "latency": latency,
            "roofline": _roofline(run),
            "timing_check": _timing_check(bm.result) if bm.ok else shown(NotMeasured(bm.why_missing)),
            "settings": _settings_text(run),
        },
        "levels": levels,
        "levels_note": ""
        if levels
        else (shown(NotMeasured(bm.why_missing)) if not bm.ok else "benchmark.json 的 summary 为空。"),
        "charts": bench_charts,
        "charts_missing": ""
        if bench_charts
        else shown(NotMeasured(chart_reasons.get("benchmark", bm.why_missing))),
    }
