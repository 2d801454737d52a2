"""Benchmark charts: latency distribution and tokens/s by concurrency level.

The one implementation of these two charts. `write_charts` is used by `python run.py benchmark`
(writes `report_assets/benchmark_latency.png` and `report_assets/benchmark_tokens_per_s.png` in the
run folder) and `python -m benchmarks --charts`; the report (`reporting/charts.py`) draws the same
charts from an older `benchmark.json` that has none. Labels are Chinese with the metric's English
name when the Noto CJK font is installed, English otherwise, so no glyph ever renders as a box.
Reads nothing; writes the PNGs it is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from trainer import plotting

# Where the latency chart's numbers came from: each request, or the summary's percentiles.
LatencySource = Literal["samples", "percentiles"]


def write_charts(results: dict[str, Any], folder: Path, prefix: str = "benchmark") -> list[Path]:
    """`<prefix>_latency.png` and `<prefix>_tokens_per_s.png` in `folder`; the paths drawn (none when
    no request succeeded)."""
    summary, samples = results["summary"], results["samples"]
    if not any(s.get("ok") for s in samples) or not summary:
        return []
    subtitle = f"{results['engine']} · {results.get('quantization') or ''}"
    limit = (results.get("roofline") or {}).get("limit_tokens_per_s")
    latency, throughput = folder / f"{prefix}_latency.png", folder / f"{prefix}_tokens_per_s.png"
    written = []
    if latency_chart(summary, samples, latency, subtitle):
        written.append(latency)
    if throughput_chart(summary, limit, throughput, subtitle):
        written.append(throughput)
    return written


def _labeler(has_cjk: bool) -> Callable[[str, str], str]:
    return (lambda zh, en: f"{zh} ({en})") if has_cjk else (lambda zh, en: en)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _level_samples(samples: Sequence[dict[str, Any]], key: str, level: Any) -> list[float]:
    """`key` of the successful requests at one concurrency level."""
    values = []
    for s in samples:
        if not isinstance(s, dict) or s.get("concurrency") != level:
            continue
        if s.get("ok") is False or s.get("error"):
            continue
        v = _num(s.get(key))
        if v is not None:
            values.append(v)
    return values


def _percentile_bars(ax: Any, summary: Sequence[dict[str, Any]], key: str) -> bool:
    """p50/p90/p99 of `key` from the summary rows as grouped bars; False when there is none."""
    width, drawn = 0.25, False
    for j, (pct, color) in enumerate((("p50", "#2b6cb0"), ("p90", "#dd6b20"), ("p99", "#c53030"))):
        xs, ys = [], []
        for i, row in enumerate(summary):
            v = _num((row.get(key) or {}).get(pct)) if isinstance(row.get(key), dict) else None
            if v is not None:
                xs.append(i + (j - 1) * width)
                ys.append(v)
        if ys:
            ax.bar(xs, ys, width=width, color=color, label=pct)
            drawn = True
    if drawn:
        ax.legend(fontsize=8)
    return drawn


def latency_chart(
    summary: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]], path: Path, subtitle: str = ""
) -> LatencySource | None:
    """TTFT and end-to-end latency per concurrency: box plots of the requests when every level has
    some, else p50/p90/p99 bars from the summary. None (nothing written) when there is no number."""
    levels = [row.get("concurrency") for row in summary if isinstance(row, dict)]
    if not levels:
        return None
    fig, axes, has_cjk = plotting.figure(7.2, 3.3, ncols=2)
    label = _labeler(has_cjk)
    ticks = [str(lv) for lv in levels]
    source: LatencySource = "samples"
    drawn = False
    for ax, key, name in ((axes[0], "ttft_ms", label("首字延迟", "TTFT")), (axes[1], "e2e_ms", label("端到端延迟", "E2E"))):  # fmt: skip
        per_level = [_level_samples(samples, key, lv) for lv in levels]
        if all(per_level):
            ax.boxplot(per_level, tick_labels=ticks, showmeans=True)
            drawn = True
        else:
            source = "percentiles"
            drawn = _percentile_bars(ax, summary, key) or drawn
            ax.set_xticks(range(len(levels)), ticks)
        ax.set_title(name)
        ax.set_xlabel(label("并发数", "concurrency"))
        ax.set_ylabel(label("毫秒", "ms"))
        ax.grid(axis="y", alpha=0.3)
    if not drawn:
        return None
    if subtitle:
        fig.suptitle(f"{label('延迟分布', 'latency distribution')} — {subtitle}")
    plotting.save_png(fig, path)
    return source


def throughput_chart(
    summary: Sequence[dict[str, Any]], limit_tokens_per_s: float | None, path: Path, subtitle: str = ""
) -> bool:
    """Per-request decode tokens/s and aggregate tokens/s per concurrency, with the roofline limit
    of one stream as a dashed line. False (nothing written) when there is no number."""
    rows = [r for r in summary if isinstance(r, dict)]
    per_request = [_num(r.get("decode_tokens_per_s")) for r in rows]
    aggregate = [_num(r.get("aggregate_tokens_per_s")) for r in rows]
    if all(v is None for v in per_request + aggregate):
        return False
    fig, ax, has_cjk = plotting.figure(7.2, 3.3)
    label = _labeler(has_cjk)
    width = 0.38
    for offset, values, name, color in (
        (-width / 2, per_request, label("单请求解码速度", "decode tok/s per request"), "#2b6cb0"),
        (width / 2, aggregate, label("总吞吐", "aggregate tok/s"), "#38a169"),
    ):
        xs = [i + offset for i, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        if ys:
            bars = ax.bar(xs, ys, width=width, label=name, color=color)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
    if limit_tokens_per_s:
        ax.axhline(
            limit_tokens_per_s,
            color="#c53030",
            linestyle="--",
            linewidth=1,
            label=f"{label('单流上限', 'roofline limit, one stream')} {limit_tokens_per_s:.1f}",
        )
    ax.set_xticks(range(len(rows)), [str(r.get("concurrency")) for r in rows])
    ax.set_xlabel(label("并发数", "concurrency"))
    ax.set_ylabel(label("词元/秒", "tokens/s"))
    title = label("吞吐量", "throughput")
    ax.set_title(f"{title} — {subtitle}" if subtitle else title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    plotting.save_png(fig, path)
    return True
