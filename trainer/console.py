"""The terminal of `python run.py`: one progress line per stage; the details go to logs/training.log.

The runner (trainer/pipeline.py) opens `stage_line(...)` around each stage: a single rich progress
line (the stage's name, a bar once the stage says how many steps it has, its own short status such
as loss and tokens/s, the elapsed time and an estimate of what is left). A stage reports progress
through `line()` (a line that does nothing when no runner drew one, e.g. in a test).

For the same span, `details_to_log(run_dir)` sends what libraries say to the run's
`logs/training.log` instead of the terminal: the loggers of transformers, datasets, TRL, PEFT,
accelerate, bitsandbytes, Unsloth, llama-cpp-python and httpx, Python warnings, and the project's
own `trainer.*` / `benchmarks.*` / `reporting.*` log lines. Library progress bars are switched off.
Nothing is dropped: a reader who wants the details finds them in the log. Warnings a user can act on
stay on the terminal: the stages' own notes and warnings in the summary table (run.py) and prepare's
data warnings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from trainer.runfolder import RunDir

LOG_FILE = "logs/training.log"
# Loggers of the libraries the stages use: to the log file, not the terminal.
LIBRARY_LOGGERS = (
    "transformers",
    "datasets",
    "trl",
    "peft",
    "accelerate",
    "bitsandbytes",
    "unsloth",
    "unsloth_zoo",
    "llama-cpp-python",
    "httpx",
    "httpcore",
    "huggingface_hub",
    "torch",
    "matplotlib",
    "fontTools",
    "weasyprint",
    "py.warnings",
)
PROJECT_LOGGERS = ("trainer", "benchmarks", "reporting")
# Progress bars of the Hugging Face libraries (read when they are imported).
PROGRESS_BAR_SWITCHES = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def quiet_progress_bars() -> None:
    """Switch off the Hugging Face libraries' own progress bars (the stage line replaces them)."""
    for name, value in PROGRESS_BAR_SWITCHES.items():
        os.environ.setdefault(name, value)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()


def _log_file(run_dir: RunDir) -> Path:
    """The run's log file, its folder created."""
    path = run_dir / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def details_to_log(run_dir: RunDir, write: bool = True) -> Iterator[Path]:
    """Library and project log lines and Python warnings go to `logs/training.log` (appended) while
    the block runs; `write=False` (a non-main process of a launch) drops them instead."""
    quiet_progress_bars()
    path = run_dir / LOG_FILE
    handler: logging.Handler = (
        logging.FileHandler(_log_file(run_dir), encoding="utf-8") if write else logging.NullHandler()
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved: list[tuple[logging.Logger, list[logging.Handler], bool, int]] = []
    for name in (*LIBRARY_LOGGERS, *PROJECT_LOGGERS):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate, logger.level))
        logger.handlers = [handler]
        logger.propagate = False
        if name in PROJECT_LOGGERS:
            logger.setLevel(logging.INFO)
        elif logger.level in (logging.NOTSET, logging.DEBUG, logging.INFO):
            logger.setLevel(logging.WARNING)
    captured = logging.captureWarnings
    captured(True)
    try:
        yield path
    finally:
        captured(False)
        for logger, handlers, propagate, level in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        handler.close()


@contextlib.contextmanager
def printed_to_log(run_dir: RunDir, stderr: bool = True, write: bool = True) -> Iterator[None]:
    """What a library prints itself (Unsloth's banners, llama.cpp's loader lines through
    llama-cpp-python) goes to the log file too, for the length of the block: standard output, and
    standard error unless `stderr=False` (a stage's own warnings to the user, such as prepare's, are
    printed there). Open the stage line first: it keeps writing to the terminal."""
    if not write:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
        return
    with open(_log_file(run_dir), "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        if stderr:
            with contextlib.redirect_stderr(log):
                yield
        else:
            yield


class StageLine:
    """One stage's progress line. `total`/`advance` draw a bar (steps, batches, requests);
    `status` is the stage's short state next to it ("loss 1.23 · 850 tokens/s")."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress = progress
        self._task = task
        # Room for the status: the line's width less the name, bar, count and times before it.
        self._room = max(20, progress.console.width - 60) if progress is not None else 0

    def total(self, total: float, completed: float = 0) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total, completed=completed)
            self._count()

    def advance(self, steps: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, steps)
            self._count()

    def _count(self) -> None:
        task = self._progress.tasks[0]
        if task.total is not None:
            self._progress.update(self._task, count=f"{task.completed:g}/{task.total:g}")

    def status(self, text: str) -> None:
        if self._progress is not None:
            from rich.text import Text

            shown = Text(" ".join(text.split()))
            shown.truncate(self._room, overflow="ellipsis")
            self._progress.update(self._task, status=shown.plain)

    def conclude(self, text: str) -> None:
        """The stage's closing words (its headline) in place of its last status."""
        if text:
            self.status(text)


_current = StageLine()


def line() -> StageLine:
    """The progress line of the stage that is running (a line that draws nothing outside the runner)."""
    return _current


@contextlib.contextmanager
def stage_line(name: str, show: bool = True, file: TextIO | None = None) -> Iterator[StageLine]:
    """Draw `name`'s progress line while the block runs; on a terminal it updates in place, in a
    file (a transcript, CI) it is written once, as it ends."""
    global _current
    if not show:
        yield _current
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Column

    terminal = Console(file=file or sys.stdout, highlight=False)
    if not terminal.is_terminal:
        terminal.width = max(terminal.width, 120)  # a transcript keeps the whole line
    fixed = lambda width: Column(width=width, no_wrap=True)  # noqa: E731
    progress = Progress(
        TextColumn("{task.description}", table_column=fixed(9)),
        BarColumn(bar_width=20, table_column=fixed(20)),
        TextColumn("{task.fields[count]}", table_column=Column(min_width=5, no_wrap=True)),
        TimeElapsedColumn(table_column=fixed(7)),
        TextColumn("{task.fields[eta]}", table_column=Column(no_wrap=True)),
        # The stage's own words take what is left of the line (`StageLine.status` cuts them short).
        TextColumn("{task.fields[status]}", table_column=Column(no_wrap=True)),
        console=terminal,
        transient=False,
        refresh_per_second=4,
    )
    task = progress.add_task(name, total=None, status="", eta="", count="")
    _current = _EtaLine(progress, task)
    progress.start()
    try:
        yield _current
    finally:
        _current.finish()
        progress.stop()
        _current = StageLine()


class _EtaLine(StageLine):
    """A stage line that shows the time left once steps advance (after the first, which warms up)."""

    def __init__(self, progress: Any, task: Any) -> None:
        super().__init__(progress, task)
        self._first: tuple[float, float] | None = None

    def advance(self, steps: float = 1) -> None:
        super().advance(steps)
        task = self._progress.tasks[0]
        now = time.monotonic()
        if self._first is None:
            self._first = (now, task.completed)
            return
        t0, done0 = self._first
        if task.total and task.completed > done0:
            left = (task.total - task.completed) * (now - t0) / (task.completed - done0)
            self._progress.update(self._task, eta=f"~{_clock(left)} left")

    def total(self, total: float, completed: float = 0) -> None:
        super().total(total, completed)
        self._first = None

    def finish(self) -> None:
        """The line as it stays on screen: a full bar for a stage that counted nothing."""
        task = self._progress.tasks[0]
        if task.total is None:
            self._progress.update(self._task, total=1, completed=1)
        self._progress.update(self._task, eta="")


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
