"""The one exception type for a user's mistake: run.py prints it without a traceback and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input, bad config or a missing prerequisite that the user can fix.

    The message says where (file, line or record, field), what was wrong and how to fix it.
    """

    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.fix = fix
        super().__init__(message if not fix else f"{message}\n  How to fix: {fix}")


def problem_list(command: str, problems: list[str]) -> str:
    """One message for every problem found in a command's input, one per line."""
    lines = "".join(f"\n  - {p}" for p in problems)
    return f"{command}: {len(problems)} problem{'s' if len(problems) > 1 else ''} in the input, nothing was run:{lines}"
