"""Reading a rendered report back in the tests: Markdown tables and sections, PDF text and word boxes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

# A template placeholder that must never survive into a report.
PLACEHOLDER = re.compile(r"\[[^\]]*(X|Y|Z|填写|日期|姓名|是/否|成功/失败|通过/未通过)[^\]]*\]")
_UNESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def unescape(cell: str) -> str:
    return _UNESCAPE.sub(r"\1", cell.strip())


def split_row(line: str) -> list[str]:
    """Cells of one Markdown table row, split on pipes that are not escaped."""
    parts = re.split(r"(?<!\\)\|", line.strip())
    return parts[1:-1]


def table_blocks(markdown: str) -> list[list[str]]:
    """Consecutive `|` lines of the Markdown source (outside fenced blocks), raw."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in outside_fences(markdown):
        stripped = line.strip()
        if stripped.startswith("|"):
            current.append(stripped)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def outside_fences(markdown: str) -> list[str]:
    """The lines of `markdown` that are not inside a fenced code block."""
    out: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        match = re.match(r"^(`{3,})", line.strip())
        if match and (fence is None or line.strip().startswith(fence)):
            fence = None if fence else match.group(1)
            continue
        if fence is None:
            out.append(line)
    return out


def tables(markdown: str) -> list[list[list[str]]]:
    """Every table as rows of unescaped cells, header first, the --- row dropped."""
    out = []
    for block in table_blocks(markdown):
        rows = [[unescape(c) for c in split_row(line)] for line in block]
        out.append([r for r in rows if not all(re.fullmatch(r":?-+:?", c) for c in r)])
    return out


def section(markdown: str, title: str) -> str:
    """The text under a heading whose title contains `title`, up to the next heading of that level or above."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(#{1,6}) (.*)$", line)
        if match and title in match.group(2):
            level = len(match.group(1))
            body = []
            for nxt in lines[i + 1 :]:
                m2 = re.match(r"^(#{1,6}) ", nxt)
                if m2 and len(m2.group(1)) <= level:
                    break
                body.append(nxt)
            return "\n".join(body)
    raise AssertionError(f"no heading containing {title!r}")


def kv(markdown: str) -> dict[str, str]:
    """Label -> value of every two-column table in `markdown` (first occurrence wins)."""
    out: dict[str, str] = {}
    for table in tables(markdown):
        if table and len(table[0]) == 2:
            for label, value in table[1:]:
                out.setdefault(label, value)
    return out


def rows_by_first_cell(markdown: str, header_first: str) -> dict[str, list[str]]:
    for table in tables(markdown):
        if table and table[0][0] == header_first:
            return {row[0]: row for row in table[1:]}
    raise AssertionError(f"no table whose first header is {header_first!r}")


def need_poppler() -> None:
    if not shutil.which("pdftotext"):
        pytest.skip("poppler-utils (pdftotext) is not installed")


def pdf_text(pdf: Path) -> str:
    need_poppler()
    return subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def pdf_fonts(pdf: Path) -> str:
    need_poppler()
    return subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout


def pdf_words_outside(pdf: Path, margin_pt: float = 30.0) -> list[str]:
    """Words whose box reaches into the right margin or beyond the page (a layout overflow)."""
    need_poppler()
    out = subprocess.run(
        ["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    bad = []
    width = 0.0
    for line in out.splitlines():
        page = re.search(r'<page width="([\d.]+)"', line)
        if page:
            width = float(page.group(1))
        word = re.search(r'<word xMin="([\d.]+)" yMin="[\d.]+" xMax="([\d.]+)"[^>]*>(.*)</word>', line)
        if word and float(word.group(2)) > width - margin_pt:
            bad.append(word.group(3)[:40])
    return bad
