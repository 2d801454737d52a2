"""The matplotlib setup every chart shares: the CJK font, a figure on the Agg canvas, an atomic PNG.

Used by the benchmark's charts (`benchmarks/charts.py`, `python run.py benchmark` and
`python -m benchmarks --charts`) and the report's (`reporting/charts.py`, `python run.py report`).
It lives here, at the bottom layer, so that the benchmark never imports the reporting code. Reads
only font files; writes the PNG it is given.

Chinese labels need Noto Sans CJK (Debian fonts-noto-cjk). It is registered with matplotlib's font
manager by file, so no glyph renders as a box whatever matplotlib's font cache holds. Figures use
matplotlib's object API: no pyplot state, no backend switch.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.runfolder import atomic_path

FONT_FAMILY = "Noto Sans CJK SC"
# Debian/Ubuntu fonts-noto-cjk; Fedora/Arch use the other names.
FONT_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
)
DPI = 130


def cjk_font_files(candidates: Sequence[str] | None = None) -> list[Path]:
    """Noto Sans CJK files on this machine, fontconfig's answer first, then `candidates` that exist;
    empty when there is none."""
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
            # fc-match always names some file: only a CJK one counts.
            if out and "CJK" in Path(out).name and Path(out).is_file():
                found.append(Path(out))
    found += [Path(p) for p in (FONT_FILES if candidates is None else candidates) if Path(p).is_file()]
    return list(dict.fromkeys(found))


_has_cjk: bool | None = None


def _configure() -> bool:
    """Register the CJK font once per process; True when there is one."""
    global _has_cjk
    if _has_cjk is None:
        import matplotlib
        from matplotlib import font_manager

        fonts = cjk_font_files()
        for path in fonts:
            font_manager.fontManager.addfont(str(path))
        if fonts:
            families = list(matplotlib.rcParams["font.sans-serif"])
            matplotlib.rcParams["font.sans-serif"] = [FONT_FAMILY, *[f for f in families if f != FONT_FAMILY]]
        matplotlib.rcParams["font.family"] = "sans-serif"
        matplotlib.rcParams["axes.unicode_minus"] = False
        _has_cjk = bool(fonts)
    return _has_cjk


def figure(width_in: float, height_in: float, ncols: int = 1) -> tuple[Any, Any, bool]:
    """(Figure, axes, has_cjk): a matplotlib Figure on the Agg canvas with the CJK font first in
    font.sans-serif; has_cjk says whether Chinese text will render."""
    has_cjk = _configure()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols), has_cjk


def save_png(fig: Any, path: Path) -> None:
    """Write the figure as a PNG, atomically (a later reader never sees half a file)."""
    fig.tight_layout()
    # No "Software" metadata: the same chart gives the same bytes whatever matplotlib version.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
