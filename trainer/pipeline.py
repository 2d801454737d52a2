"""The runner of `python run.py STAGE` and `python run.py all`: it runs `Stage`s and records them.

The stages themselves are listed once, in pipeline order, in `stages.py` at the project root (above
the packages it names); this module only knows what a stage is. Each stage is one module with one
entry point `run(cfg, run_dir) -> <Stage>Result` (its typed key results, trainer/results/). The
runner writes `<stage>.json` around it: status, times, the config fingerprint and
`result.to_dict()`. A result that does not match its stage's type fails the stage when it is
written (`ResultError`, naming the key), never later in a reader.
A completed stage whose fingerprint matches the current config is skipped by `all` (so an
interrupted `all` continues where it stopped); `--force` reruns it.

Under a multi-process launch (`accelerate launch --config_file configs/accelerate/ddp_cpu.yaml run.py
train ...`, torchrun), every process runs the stage but only the main one (global rank 0, see
trainer/processes.py) writes the run folder's records: `config.resolved.yaml`, `env.json`,
`<stage>.json`.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainer import console
from trainer.config import PipelineConfig, config_fingerprint, to_yaml
from trainer.errors import UserError
from trainer.processes import is_main_process
from trainer.results import ResultError, StageResult
from trainer.runfolder import COMPLETED, RunDir, environment, now_iso, write_json, write_text

log = logging.getLogger("trainer.pipeline")


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, as `stages.py` lists it."""

    name: str  # `python run.py NAME`, and the run folder's `NAME.json`
    run: Callable[[PipelineConfig, RunDir], StageResult]  # the entry point
    result: type[StageResult]  # what `run` returns, as written under `results` in `NAME.json`
    sections: tuple[str, ...]  # the config sections that decide its result (the fingerprint)
    help: str  # one line for `python run.py --help`
    name_zh: str  # its name in the Chinese report
    # `--force`: drop the stage's resumable state (e.g. checkpoints) before it runs again.
    reset: Callable[[RunDir], None] | None = None
    # The report's one line of what a completed run of it produced (the stage table's 摘要), in Chinese.
    summary_zh: Callable[[Any], str] | None = None


@dataclass
class StageOutcome:
    name: str
    status: str  # completed | skipped | failed
    duration_s: float = 0.0
    message: str = ""
    results: dict[str, Any] = field(default_factory=dict)  # as written to `<stage>.json`


def _results_to_write(stage: Stage, returned: Any) -> dict[str, Any]:
    """What goes under `results` in `<stage>.json`: the stage's typed result as a dict, checked
    against the stage's type so that a wrong shape fails now and not in a reader.

    Every stage returns its typed result; a plain dict (a test's stand-in stage) is decoded through
    the type and must encode back to itself, and is then written as returned (so its key order is
    kept).
    """
    result_type = stage.result
    if not isinstance(returned, (result_type, dict)):
        raise ResultError(
            f"the {stage.name} stage returned a {type(returned).__name__}, expected a {result_type.__name__}"
        )
    data = returned.to_dict() if isinstance(returned, StageResult) else returned
    try:
        # Decoding the written form checks nested objects too (a typed result can still hold
        # a wrongly shaped value, e.g. a number where a list of checkpoints belongs).
        again = result_type.from_dict(data).to_dict()
    except ResultError as exc:
        raise ResultError(
            f"the {stage.name} stage's results do not match {result_type.__name__}: {exc}"
        ) from None
    if again != data:
        changed = sorted(k for k in {*data, *again} if data.get(k) != again.get(k))
        raise ResultError(
            f"the {stage.name} stage's results do not round-trip through {result_type.__name__}: {changed}"
        )
    return data


def prepare_run_dir(cfg: PipelineConfig, run_dir: RunDir, command: str) -> None:
    """Record the resolved config and the machine. `report` only reads a run (possibly a copy made
    elsewhere), so it leaves both files as the run wrote them. Only the main process writes them."""
    if not is_main_process():
        return
    run_dir.path.mkdir(parents=True, exist_ok=True)
    if command == "report" and (run_dir / "config.resolved.yaml").exists():
        return
    write_text(run_dir / "config.resolved.yaml", to_yaml(cfg))
    write_json(run_dir / "env.json", environment())


def fingerprint(cfg: PipelineConfig, stage: Stage) -> str:
    """The hash of what decides `stage`'s result: its config sections (and the data files' content)."""
    return config_fingerprint(cfg, stage.sections)


def run_stage(stage: Stage, cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> StageOutcome:
    """Run one stage and record `<stage>.json`. A user error is recorded and re-raised.

    The terminal shows the stage's progress line; what libraries log goes to logs/training.log
    (trainer/console.py).

    With `force`, the stage's `reset(run_dir)` (if it has one) drops its resumable state first.
    In a multi-process launch only the main process resets and records; the stage itself makes the
    other processes wait until the main one has settled its state (see trainer/train.py).
    """
    main = is_main_process()
    if force and main and stage.reset is not None:
        stage.reset(run_dir)
    started = now_iso()
    t0 = time.perf_counter()
    base = {"stage": stage.name, "config_fingerprint": fingerprint(cfg, stage), "started_at": started}
    if main:
        write_json(run_dir.stage_file(stage.name), {**base, "status": "running"})
    try:
        with console.details_to_log(run_dir, write=main), console.stage_line(stage.name, show=main) as line:
            with console.printed_to_log(run_dir, stderr=False, write=main):  # what libraries print
                log.info("stage %s started (config fingerprint %s)", stage.name, base["config_fingerprint"])
                returned = stage.run(cfg, run_dir)
            line.conclude(str(getattr(returned, "headline", "") or ""))
        results = _results_to_write(stage, returned)
    except BaseException as exc:
        duration = time.perf_counter() - t0
        interrupted = isinstance(exc, KeyboardInterrupt)
        record = {
            **base,
            "status": "interrupted" if interrupted else "failed",
            "finished_at": now_iso(),
            "duration_s": round(duration, 3),
            "error": "interrupted (Ctrl-C)" if interrupted else str(exc),
        }
        if not isinstance(exc, (UserError, KeyboardInterrupt)):
            record["traceback"] = traceback.format_exc()
        if main:
            write_json(run_dir.stage_file(stage.name), record)
        raise
    duration = time.perf_counter() - t0
    record = {
        **base,
        "status": COMPLETED,
        "finished_at": now_iso(),
        "duration_s": round(duration, 3),
        "results": results,
    }
    if main:
        write_json(run_dir.stage_file(stage.name), record)
    return StageOutcome(stage.name, COMPLETED, duration, results=results)


def is_current(cfg: PipelineConfig, run_dir: RunDir, stage: Stage) -> bool:
    """Whether `stage` has completed in `run_dir` for the config as it is now."""
    done = run_dir.completed(stage.name)
    return bool(done and done.get("config_fingerprint") == fingerprint(cfg, stage))


def run_all(
    stages: Sequence[Stage],
    cfg: PipelineConfig,
    run_dir: RunDir,
    force: bool = False,
    on_start: Callable[[Stage], None] | None = None,
    on_done: Callable[[StageOutcome], None] | None = None,
) -> list[StageOutcome]:
    """Run `stages` in the order given, skipping those already completed for this config unless
    `force`."""
    outcomes = []
    for stage in stages:
        if not force and is_current(cfg, run_dir, stage):
            done = run_dir.completed(stage.name) or {}
            outcome = StageOutcome(
                stage.name,
                "skipped",
                done.get("duration_s", 0.0),
                "already completed for this config",
                results=done.get("results", {}),
            )
        else:
            if on_start:
                on_start(stage)
            outcome = run_stage(stage, cfg, run_dir, force=force)
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)
    return outcomes
