"""Benchmark charts for the report: latency distribution and tokens/s by concurrency level.

Used by `python run.py benchmark` (writes `report_assets/benchmark_latency.png` and
`report_assets/benchmark_tokens_per_s.png` in the run folder) and `python -m benchmarks --charts`.
Labels are Chinese with the metric's English name when the Noto CJK font is installed (Debian
fonts-noto-cjk), English otherwise, so no glyph ever renders as a box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.runfolder import atomic_path

CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def _setup() -> tuple[Any, bool]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager
    from matplotlib import pyplot as plt

    cjk = CJK_FONT.is_file()
    if cjk:
        font_manager.fontManager.addfont(str(CJK_FONT))
        family = font_manager.FontProperties(fname=str(CJK_FONT)).get_name()
        plt.rcParams["font.sans-serif"] = [family, *plt.rcParams["font.sans-serif"]]
        plt.rcParams["font.family"] = "sans-serif"
    plt.rcParams["axes.unicode_minus"] = False
    return plt, cjk


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")


def write_charts(results: dict[str, Any], folder: Path, prefix: str = "benchmark") -> list[Path]:
    """Two PNGs in `folder`; returns their paths (none when no request succeeded)."""
    ok = [s for s in results["samples"] if s.get("ok")]
    levels = [row["concurrency"] for row in results["summary"]]
    if not ok or not levels:
        return []
    plt, cjk = _setup()
    zh = (lambda z, e: f"{z} ({e})") if cjk else (lambda z, e: e)
    title = f"{results['engine']} · {results.get('quantization') or ''}"
    written = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in (
        (axes[0], "ttft_ms", zh("首字延迟", "TTFT, ms")),
        (axes[1], "e2e_ms", zh("端到端延迟", "end-to-end latency, ms")),
    ):
        data = [[s[key] for s in ok if s["concurrency"] == c and s.get(key) is not None] for c in levels]
        ax.boxplot(data, tick_labels=[str(c) for c in levels], showmeans=True)
        ax.set_xlabel(zh("并发数", "concurrency"))
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{zh('延迟分布', 'latency distribution')} — {title}")
    path = folder / f"{prefix}_latency.png"
    _save(fig, path)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    xs = range(len(levels))
    per_request = [row.get("decode_tokens_per_s") or 0 for row in results["summary"]]
    aggregate = [row.get("aggregate_tokens_per_s") or 0 for row in results["summary"]]
    ax.bar(
        [x - width / 2 for x in xs],
        per_request,
        width,
        label=zh("单请求解码速度", "decode tok/s per request"),
    )
    ax.bar([x + width / 2 for x in xs], aggregate, width, label=zh("总吞吐", "aggregate tok/s"))
    limit = (results.get("roofline") or {}).get("limit_tokens_per_s")
    if limit:
        ax.axhline(limit, color="grey", linestyle="--", label=zh("单流上限", "roofline limit, one stream"))
    ax.set_xticks(list(xs), [str(c) for c in levels])
    ax.set_xlabel(zh("并发数", "concurrency"))
    ax.set_ylabel(zh("词元/秒", "tokens/s"))
    ax.set_title(f"{zh('吞吐量', 'throughput')} — {title}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    path = folder / f"{prefix}_tokens_per_s.png"
    _save(fig, path)
    plt.close(fig)
    written.append(path)
    return written
