"""Charts of `python run.py report`: `report_*.png` files under `report_assets/` in the run folder.

Reads nothing itself: it draws the loss log (`logs/metrics.jsonl` rows), the checkpoints of
`train.json` and the `summary`/`samples` of `benchmark.json` that the report passes in, and writes
one PNG per chart into the folder it is given. Labels are Chinese, drawn with Noto Sans CJK
(registered with matplotlib's font manager, so no tofu whatever matplotlib's font cache holds).
Figures use matplotlib's object API on the Agg canvas: no pyplot state, no backend switch.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import UserError
from trainer.runfolder import atomic_path

FONT_FAMILY = "Noto Sans CJK SC"
# Debian/Ubuntu fonts-noto-cjk; Fedora/Arch use the other names.
_FONT_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
)
DPI = 130
# Under report_assets/, beside the benchmark stage's own benchmark_*.png: the report never touches those.
LOSS_FILE = "report_loss_curve.png"
LATENCY_FILE = "report_latency.png"
THROUGHPUT_FILE = "report_throughput.png"
REPORT_FILES = (LOSS_FILE, LATENCY_FILE, THROUGHPUT_FILE)


@dataclass(frozen=True)
class Chart:
    """A written chart: file name under report_assets/ and its caption (also the alt text)."""

    file: str
    caption: str


def cjk_font_files() -> list[Path]:
    """Noto Sans CJK files on this machine (fontconfig's answer first), or a UserError saying how to get one."""
    found: list[Path] = []
    if shutil.which("fc-match"):
        for style in ("Regular", "Bold"):
            try:
                out = subprocess.run(
                    ["fc-match", "-f", "%{file}", f"{FONT_FAMILY}:style={style}"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                out = ""
            if out and "CJK" in Path(out).name and Path(out).is_file():
                found.append(Path(out))
    found += [Path(p) for p in _FONT_FILES if Path(p).is_file()]
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError(
            "the report needs the Noto Sans CJK font (for the Chinese text in the PDF and the charts).",
            fix="install it: `sudo apt-get install fonts-noto-cjk` (Debian/Ubuntu), or use --format md",
        )
    return unique


_configured = False


def _figure(width_in: float, height_in: float, ncols: int = 1) -> tuple[Any, Any]:
    """A matplotlib Figure on the Agg canvas (no pyplot: no global figure state, no backend switch),
    with the CJK font first in font.sans-serif."""
    global _configured
    import matplotlib
    from matplotlib import font_manager
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not _configured:
        for path in cjk_font_files():
            font_manager.fontManager.addfont(str(path))
        families = list(matplotlib.rcParams["font.sans-serif"])
        matplotlib.rcParams["font.sans-serif"] = [FONT_FAMILY, *[f for f in families if f != FONT_FAMILY]]
        matplotlib.rcParams["font.family"] = "sans-serif"
        matplotlib.rcParams["axes.unicode_minus"] = False
        _configured = True
    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Any, out_dir: Path, name: str) -> None:
    fig.tight_layout()
    with atomic_path(out_dir / name) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def loss_chart(
    metrics: Sequence[dict[str, Any]],
    checkpoint_steps: Sequence[int],
    best: tuple[int, float] | None,
    out_dir: Path,
) -> Chart | None:
    """Training and validation loss against step, checkpoints as dashed lines, the best as a star."""
    train = [(r["step"], _num(r.get("loss"))) for r in metrics if _num(r.get("loss")) is not None]
    evals = [(r["step"], _num(r.get("eval_loss"))) for r in metrics if _num(r.get("eval_loss")) is not None]
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
    _save(fig, out_dir, LOSS_FILE)
    return Chart(LOSS_FILE, "训练与验证 Loss 曲线（来源：logs/metrics.jsonl，检查点来自 train.json）")


def _level_samples(samples: Sequence[dict[str, Any]], key: str, level: Any) -> list[float]:
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


def latency_chart(
    summary: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]], out_dir: Path
) -> Chart | None:
    """TTFT and end-to-end latency per concurrency: box plots of the samples, else p50/p90/p99 bars."""
    levels = [row.get("concurrency") for row in summary if isinstance(row, dict)]
    if not levels:
        return None
    fig, axes = _figure(7.2, 3.3, ncols=2)
    drawn = False
    used_samples = False
    for ax, key, title in ((axes[0], "ttft_ms", "首 token 延迟 TTFT"), (axes[1], "e2e_ms", "端到端延迟 E2E")):
        per_level = [_level_samples(samples, key, lv) for lv in levels]
        if all(per_level):
            ax.boxplot(per_level, tick_labels=[str(lv) for lv in levels], showfliers=True)
            drawn = used_samples = True
        else:
            width = 0.25
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
            ax.set_xticks(range(len(levels)), [str(lv) for lv in levels])
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("并发数")
        ax.set_ylabel("毫秒（ms）")
        ax.grid(axis="y", alpha=0.3)
    if not drawn:
        return None
    _save(fig, out_dir, LATENCY_FILE)
    source = (
        "每个请求的分布（benchmark.json samples）"
        if used_samples
        else "p50/p90/p99（benchmark.json summary）"
    )
    return Chart(LATENCY_FILE, f"延迟随并发数的变化：{source}")


def throughput_chart(
    summary: Sequence[dict[str, Any]], limit_tokens_per_s: float | None, out_dir: Path
) -> Chart | None:
    """Per-request decode tokens/s and aggregate tokens/s per concurrency, with the roofline limit."""
    rows = [r for r in summary if isinstance(r, dict)]
    per_req = [_num(r.get("decode_tokens_per_s")) for r in rows]
    aggregate = [_num(r.get("aggregate_tokens_per_s")) for r in rows]
    if all(v is None for v in per_req + aggregate):
        return None
    fig, ax = _figure(7.2, 3.3)
    width = 0.38
    for offset, values, label, color in (
        (-width / 2, per_req, "单请求解码速度（均值）", "#2b6cb0"),
        (width / 2, aggregate, "总吞吐", "#38a169"),
    ):
        xs = [i + offset for i, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        if ys:
            bars = ax.bar(xs, ys, width=width, label=label, color=color)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
    if limit_tokens_per_s:
        ax.axhline(
            limit_tokens_per_s,
            color="#c53030",
            linestyle="--",
            linewidth=1,
            label=f"单请求理论上限 {limit_tokens_per_s:.1f}",
        )
    ax.set_xticks(range(len(rows)), [str(r.get("concurrency")) for r in rows])
    ax.set_xlabel("并发数")
    ax.set_ylabel("tokens/秒")
    ax.set_title("解码速度随并发数的变化")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out_dir, THROUGHPUT_FILE)
    return Chart(
        THROUGHPUT_FILE, "解码速度（tokens/秒）随并发数的变化（来源：benchmark.json summary、roofline）"
    )
