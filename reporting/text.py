"""Text helpers of `python run.py report`: Markdown escaping and number formatting.

Reads and writes nothing. Every value that reaches `templates/report.md.j2` passes through
`escape_md` (it is the Jinja `finalize` hook), so text from the dataset, the model or any stage file
cannot add Markdown structure (a table column, a heading, a link) or raw HTML to the report. Only
`MdRaw` strings built here (images, fenced blocks of verbatim text) pass through unchanged.
`verbatim(text)` marks a stage's own words inside a plain string (an error message, an English note
of an older run): `escape_md` shows the marked part as a code span, so it reads as a quotation
and not as the report's own sentence, wherever the string is built into a longer one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from trainer.results import NotMeasured, measured

NOT_MEASURED = "未测量："


class MdRaw(str):
    """Markdown built by this package from escaped parts: the template emits it unchanged."""


# Inline Markdown punctuation that could start emphasis, code, links, raw HTML or a table column;
# `#` too, so a value can never become a heading (or close one) wherever it lands.
_MD_SPECIAL = re.compile(r"([\\`*\[\]<|#~])")
# `_` only opens/closes emphasis next to whitespace or punctuation (zh_general stays as written);
# `&` only matters where it would start an entity (&lt; &#60;).
_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
_ENTITY = re.compile(r"&(?=#?\w+;)")
_LIST_START = re.compile(r"^([-+])(\s|$)")
_ORDERED_START = re.compile(r"^(\d{1,9})([.)])(\s|$)")
_RULE_START = re.compile(r"^([-=])(?=[-=\s]*$)")
_QUOTE_START = re.compile(r"^>")


# Private-use characters around a verbatim quotation (see `verbatim`); never in a stage's text.
_QUOTE_OPEN, _QUOTE_CLOSE = "\ue000", "\ue001"
_QUOTED = re.compile(f"{_QUOTE_OPEN}([^{_QUOTE_CLOSE}]*)(?:{_QUOTE_CLOSE}|$)")


def verbatim(text: Any) -> str:
    """`text` marked as quoted as written (a code span in the report), "" for empty text."""
    one_line = " ".join(str(text or "").replace(_QUOTE_OPEN, "").replace(_QUOTE_CLOSE, "").split())
    return f"{_QUOTE_OPEN}{one_line}{_QUOTE_CLOSE}" if one_line else ""


def plain(text: Any) -> str:
    """`text` without verbatim marks (for the terminal, report.json and other plain-text places)."""
    return str(text).replace(_QUOTE_OPEN, "").replace(_QUOTE_CLOSE, "")


def escape_md(value: Any) -> str:
    """One-line Markdown text that renders as exactly `value`, safe in a table cell or a paragraph.

    Newlines and runs of whitespace become one space (a table row is one line); leading block
    markers (list item, ordered list, thematic break, setext underline) are escaped as well. Parts
    marked by `verbatim` become code spans (a mark cut off by `shorten` ends at the end).
    """
    if isinstance(value, MdRaw):
        return value
    if value is None:
        # A None in the template means a missing value slipped past the "未测量" handling.
        raise ValueError("a None value reached the report template; give it a 未测量 reason")
    text = " ".join(str(value).split())
    if _QUOTE_OPEN in text or _QUOTE_CLOSE in text:
        parts = _QUOTED.split(text)  # prose, quotation, prose, ...
        return "".join(
            code(part)
            if i % 2
            else _escape_prose(part.replace(_QUOTE_CLOSE, ""))
            if i
            else _escape_start(part)
            for i, part in enumerate(parts)
        )
    return _escape_start(text)


def _escape_prose(text: str) -> str:
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = _UNDERSCORE.sub(r"\\_", text)
    return _ENTITY.sub(r"\\&", text)


def _escape_start(text: str) -> str:
    """Escaped prose that begins the value (block markers at its start escaped too)."""
    text = _escape_prose(text)
    text = _QUOTE_START.sub(r"\\>", text)
    text = _LIST_START.sub(r"\\\1\2", text)
    text = _ORDERED_START.sub(r"\1\\\2\3", text)
    return _RULE_START.sub(r"\\\1", text)


def fenced(text: str, info: str = "text") -> MdRaw:
    """A fenced code block showing `text` verbatim (line breaks kept, nothing interpreted).

    The fence is one backtick longer than the longest backtick run inside the text, so the text
    cannot close it (CommonMark rule).
    """
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
    return MdRaw(f"{fence}{info}\n{body}\n{fence}")


def image(path: str, caption: str) -> MdRaw:
    """An image paragraph and its caption paragraph; `path` is ours (report_assets/NAME.png)."""
    return MdRaw(f"![{escape_md(caption)}]({path})\n\n图：{escape_md(caption)}")


def code(text: str) -> MdRaw:
    """Inline code span for a path or a command (backticks inside are handled as in `fenced`)."""
    one_line = " ".join(str(text).split()).replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", one_line)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if one_line.startswith("`") or one_line.endswith("`") else ""
    return MdRaw(f"{ticks}{pad}{one_line}{pad}{ticks}")


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis and the full length."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…（截断，全文 {len(text)} 字）"


def first_line(text: str, limit: int = 160) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return shorten(lines[0] if lines else "", limit)


# ---- numbers ------------------------------------------------------------------------------------


def shown(value: Any, fmt: Callable[[Any], str] = str) -> str:
    """The report's text for a value: `fmt(value)` when it was measured, else `未测量：<why>`."""
    if measured(value):
        return fmt(value)
    if not isinstance(value, NotMeasured):
        raise ValueError("a None value has no reason to show; give it a NotMeasured(why)")
    return f"{NOT_MEASURED}{value.why}"


def is_number(value: Any) -> bool:
    """A type check, not a `measured` one: a finite int or float (not a bool, NaN or infinity)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and (math.isnan(value) or math.isinf(value)))
    )


def fmt_int(value: Any) -> str:
    return f"{int(value):,}"


def fmt_float(value: Any, digits: int = 2) -> str:
    return f"{float(value):.{digits}f}"


def fmt_signed(value: Any, digits: int = 2) -> str:
    return f"{float(value):+.{digits}f}"


def fmt_loss(value: Any) -> str:
    return f"{float(value):.4f}"


def fmt_general(value: Any) -> str:
    """Learning rates, dropout and other small config numbers as written (2e-4 -> 0.0002)."""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:g}"
    return str(value)


def fmt_bytes(value: Any) -> str:
    """Bytes in binary units with two decimals (4.08 GiB); below 1 KiB as a plain count."""
    n = float(value)
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def fmt_params(value: Any) -> str:
    n = float(value)
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} K"
    return str(int(n))


def fmt_duration(seconds: Any) -> str:
    """`1 小时 02 分 03 秒（3723.4 s）`; short times as `12.3 秒`."""
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} 秒"
    whole = round(s)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours} 小时 {minutes:02d} 分 {secs:02d} 秒" if hours else f"{minutes} 分 {secs:02d} 秒"
    return f"{text}（{s:.1f} s）"


def fmt_time(iso: Any) -> str:
    """ISO-8601 timestamp as `2025-11-29 10:04` (the offset is dropped: it is the run's local time)."""
    text = str(iso)
    match = re.match(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})", text)
    return f"{match.group(1)} {match.group(2)}" if match else text


def fmt_date(iso: Any) -> str:
    match = re.match(r"(\d{4}-\d{2}-\d{2})", str(iso))
    return match.group(1) if match else str(iso)
