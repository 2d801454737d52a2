"""Small wording helpers shared by the report sections (`reporting.sections`); reads nothing."""

from __future__ import annotations

from typing import Any

from reporting.text import shorten, shown
from trainer.results import NotMeasured

# Longest reason or note quoted from a stage file.
REASON_CHARS = 300


def with_reason(value: str, reason: Any) -> str:
    """`value（reason）`, or `value` alone when the stage gave no reason (None, "" or NotMeasured)."""
    reason = shorten(" ".join(str(reason or "").split()), REASON_CHARS)
    return f"{value}（{reason}）" if reason else value


def list_note(stage: Any, items: Any, empty_text: str) -> str:
    """The line under a table or list: why the stage file is missing, `empty_text` when it lists
    nothing, else nothing."""
    if not stage.ok:
        return shown(NotMeasured(stage.why_missing))
    return "" if items else empty_text
