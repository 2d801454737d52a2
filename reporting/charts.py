"""Charts of `python run.py report`: `report_*.png` files under `report_assets/` in the run folder.

Reads nothing itself: it draws the loss log (`logs/metrics.jsonl` rows), the checkpoints of
`train.json` and the `summary`/`samples` of `benchmark.json` that the report passes in, and writes
one PNG per chart into the folder it is given. The latency and throughput charts are the benchmark's
own (`benchmarks/charts.py`); the font and figure setup is `trainer/plotting.py`. Labels are
Chinese, so the report requires Noto Sans CJK (`cjk_font_files`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import charts as benchmark_charts
from reporting.text import is_number
from trainer import plotting
from trainer.errors import UserError

# Under report_assets/, beside the benchmark stage's own benchmark_*.png: the report never touches those.
LOSS_FILE = "report_loss_curve.png"
LATENCY_FILE = "report_latency.png"
THROUGHPUT_FILE = "report_throughput.png"
REPORT_FILES = (LOSS_FILE, LATENCY_FILE, THROUGHPUT_FILE)
COMPARE_LOSS_FILE = "compare_loss_curves.png"  # the comparison report's own assets folder


@dataclass(frozen=True)
class Chart:
    """A written chart: file name under report_assets/ and its caption (also the alt text)."""

    file: str
    caption: str


def cjk_font_files() -> list[Path]:
    """Noto Sans CJK files on this machine (fontconfig's answer first), or a UserError saying how to get one."""
    found = plotting.cjk_font_files()
    if not found:
        raise UserError(
            "the report needs the Noto Sans CJK font (for the Chinese text in the PDF and the charts).",
            fix="install it: `sudo apt-get install fonts-noto-cjk` (Debian/Ubuntu), or use --format md",
        )
    return found


def _figure(width_in: float, height_in: float) -> tuple[Any, Any]:
    cjk_font_files()  # a clear error instead of a chart of boxes
    fig, ax, _ = plotting.figure(width_in, height_in)
    return fig, ax


def loss_chart(
    metrics: Sequence[dict[str, Any]],
    checkpoint_steps: Sequence[int],
    best: tuple[int, float] | None,
    out_dir: Path,
) -> Chart | None:
    """Training and validation loss against step, checkpoints as dashed lines, the best as a star."""
    train = [(r["step"], float(r["loss"])) for r in metrics if is_number(r.get("loss"))]
    evals = [(r["step"], float(r["eval_loss"])) for r in metrics if is_number(r.get("eval_loss"))]
    if not train and not evals:
        return None
    fig, ax = _figure(7.2, 3.6)
    if train:
        ax.plot(*zip(*train, strict=True), color="#2b6cb0", linewidth=1.2, label="训练 Loss")
    if evals:
        ax.plot(
            *zip(*evals, strict=True),
            color="#dd6b20",
            linewidth=1.6,
            marker="o",
            markersize=3.5,
            label="验证 Loss",
        )
    for i, step in enumerate(checkpoint_steps):
        ax.axvline(step, color="#718096", linestyle="--", linewidth=0.8, label="检查点" if i == 0 else None)
    if best is not None:
        ax.plot(
            [best[0]],
            [best[1]],
            marker="*",
            markersize=14,
            color="#c53030",
            linestyle="none",
            label=f"最佳检查点（step {best[0]}）",
        )
    ax.set_xlabel("训练步数（step）")
    ax.set_ylabel("Loss")
    ax.set_title("训练与验证 Loss 曲线")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    plotting.save_png(fig, out_dir / LOSS_FILE)
    return Chart(LOSS_FILE, "训练与验证 Loss 曲线（来源：logs/metrics.jsonl，检查点来自 train.json）")


def loss_overlay_chart(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], out_dir: Path) -> Chart | None:
    """Training (left) and validation (right) loss of several runs against step, one colour per run
    (the comparison report, `python run.py compare`); None when no run logged a loss."""
    series = [
        (
            label,
            [(r["step"], float(r["loss"])) for r in rows if is_number(r.get("loss"))],
            [(r["step"], float(r["eval_loss"])) for r in rows if is_number(r.get("eval_loss"))],
        )
        for label, rows in runs
    ]
    if not any(train or evals for _, train, evals in series):
        return None
    cjk_font_files()
    fig, axes, _ = plotting.figure(7.4, 3.4, ncols=2)
    colours = [plotting_colour(i) for i in range(len(series))]
    for (label, train, evals), colour in zip(series, colours, strict=True):
        if train:
            axes[0].plot(*zip(*train, strict=True), color=colour, linewidth=1.2, label=label)
        if evals:
            axes[1].plot(
                *zip(*evals, strict=True), color=colour, linewidth=1.4, marker="o", markersize=3, label=label
            )
    for ax, title in zip(axes, ("训练 Loss", "验证 Loss"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("训练步数（step）")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=7)
    axes[0].set_ylabel("Loss")
    plotting.save_png(fig, out_dir / COMPARE_LOSS_FILE)
    return Chart(COMPARE_LOSS_FILE, "各运行的训练与验证 Loss 曲线（来源：各运行的 logs/metrics.jsonl）")


def plotting_colour(i: int) -> str:
    """The i-th run's colour in the comparison charts (matplotlib's tab10, repeating)."""
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
    return palette[i % len(palette)]


def latency_chart(
    summary: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]], out_dir: Path
) -> Chart | None:
    """TTFT and end-to-end latency per concurrency: box plots of the samples, else p50/p90/p99 bars."""
    cjk_font_files()
    source = benchmark_charts.latency_chart(summary, samples, out_dir / LATENCY_FILE)
    if source is None:
        return None
    where = (
        "每个请求的分布（benchmark.json samples）"
        if source == "samples"
        else "p50/p90/p99（benchmark.json summary）"
    )
    return Chart(LATENCY_FILE, f"延迟随并发数的变化：{where}")


def throughput_chart(
    summary: Sequence[dict[str, Any]], limit_tokens_per_s: float | None, out_dir: Path
) -> Chart | None:
    """Per-request decode tokens/s and aggregate tokens/s per concurrency, with the roofline limit."""
    cjk_font_files()
    if not benchmark_charts.throughput_chart(summary, limit_tokens_per_s, out_dir / THROUGHPUT_FILE):
        return None
    return Chart(
        THROUGHPUT_FILE, "解码速度（tokens/秒）随并发数的变化（来源：benchmark.json summary、roofline）"
    )
