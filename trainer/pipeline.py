"""Stage table and runner: `python run.py STAGE` and `python run.py all`.

Each stage is one module with one entry point `run(cfg, run_dir) -> <Stage>Result` (its typed key
results, trainer/results/). The runner writes `<stage>.json` around it: status, times, the config
fingerprint and `result.to_dict()`. A result that does not match its stage's type fails the stage
when it is written (`ResultError`, naming the key), never later in a reader.
A completed stage whose fingerprint matches the current config is skipped by `all` (so an
interrupted `all` continues where it stopped); `--force` reruns it.

Under a multi-process launch (`accelerate launch --config_file configs/accelerate/ddp_cpu.yaml run.py
train ...`, torchrun), every process runs the stage but only the main one (global rank 0) writes the
run folder's records: `config.resolved.yaml`, `env.json`, `<stage>.json`.
"""

from __future__ import annotations

import importlib
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainer.config import PipelineConfig, stage_fingerprint, to_yaml
from trainer.errors import UserError
from trainer.results import RESULT_TYPES, ResultError, StageResult
from trainer.runfolder import COMPLETED, RunDir, environment, now_iso, write_json, write_text

# name -> (module, one-line description for --help). Order is the pipeline order.
STAGES: dict[str, tuple[str, str]] = {
    "prepare": (
        "trainer.prepare_data",
        "validate, clean, dedupe and split Alpaca data; apply the chat format",
    ),
    "train": ("trainer.train", "LoRA/QLoRA fine-tuning with TRL SFTTrainer (Unsloth or PEFT backend)"),
    "evaluate": ("trainer.evaluate", "before/after answers on the test split with Chinese metrics"),
    "export": ("trainer.export", "merge the adapter, convert to GGUF, quantize (Q4_K_M) with llama.cpp"),
    "deploy": ("trainer.deploy", "create the Ollama model from the GGUF and test its API"),
    "benchmark": ("benchmarks.pipeline", "VRAM, tokens/s and latency through Ollama or llama.cpp"),
    "report": ("reporting.report", "the Chinese training report, Markdown and PDF, from the run's files"),
}


@dataclass
class StageOutcome:
    name: str
    status: str  # completed | skipped | failed
    duration_s: float = 0.0
    message: str = ""
    results: dict[str, Any] = field(default_factory=dict)  # as written to `<stage>.json`


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        if os.environ.get(name, "").strip():
            return int(os.environ[name])
    return default


def process_rank() -> int:
    """Global rank of this process in a multi-process launch (set by torchrun/`accelerate launch`,
    or by MPI); 0 when the process runs alone."""
    return _env_int(("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"), 0)


def world_size() -> int:
    """Number of processes of a multi-process launch; 1 when the process runs alone."""
    return _env_int(("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"), 1)


def is_main_process() -> bool:
    """The process that writes the run folder's records (the only one outside a launch)."""
    return process_rank() == 0


def _entry(stage: str) -> Callable[[PipelineConfig, RunDir], StageResult | dict[str, Any]]:
    module = importlib.import_module(STAGES[stage][0])
    return module.run


def _results_to_write(stage: str, returned: Any) -> dict[str, Any]:
    """What goes under `results` in `<stage>.json`: the stage's typed result as a dict, checked
    against the stage's type so that a wrong shape fails now and not in a reader.

    Every stage returns its typed result; a plain dict (a test's stand-in stage) is decoded through
    the type and must encode back to itself, and is then written as returned (so its key order is
    kept). A stage without a type writes what it returned.
    """
    result_type = RESULT_TYPES.get(stage)
    if result_type is None:
        return returned.to_dict() if isinstance(returned, StageResult) else returned
    if not isinstance(returned, (result_type, dict)):
        raise ResultError(
            f"the {stage} stage returned a {type(returned).__name__}, expected a {result_type.__name__}"
        )
    data = returned.to_dict() if isinstance(returned, StageResult) else returned
    try:
        # Decoding the written form checks nested objects too (a typed result can still hold
        # a wrongly shaped value, e.g. a number where a list of checkpoints belongs).
        again = result_type.from_dict(data).to_dict()
    except ResultError as exc:
        raise ResultError(f"the {stage} stage's results do not match {result_type.__name__}: {exc}") from None
    if again != data:
        changed = sorted(k for k in {*data, *again} if data.get(k) != again.get(k))
        raise ResultError(
            f"the {stage} stage's results do not round-trip through {result_type.__name__}: {changed}"
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


def run_stage(stage: str, cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> StageOutcome:
    """Run one stage and record `<stage>.json`. A user error is recorded and re-raised.

    With `force`, a stage module's optional `reset(run_dir)` drops its resumable state first.
    In a multi-process launch only the main process resets and records; the stage itself makes the
    other processes wait until the main one has settled its state (see trainer/train.py).
    """
    main = is_main_process()
    if force and main:
        reset = getattr(importlib.import_module(STAGES[stage][0]), "reset", None)
        if reset:
            reset(run_dir)
    fingerprint = stage_fingerprint(cfg, stage)
    started = now_iso()
    t0 = time.perf_counter()
    base = {"stage": stage, "config_fingerprint": fingerprint, "started_at": started}
    if main:
        write_json(run_dir.stage_file(stage), {**base, "status": "running"})
    try:
        results = _results_to_write(stage, _entry(stage)(cfg, run_dir))
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
            write_json(run_dir.stage_file(stage), record)
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
        write_json(run_dir.stage_file(stage), record)
    return StageOutcome(stage, COMPLETED, duration, results=results)


def is_current(cfg: PipelineConfig, run_dir: RunDir, stage: str) -> bool:
    done = run_dir.completed(stage)
    return bool(done and done.get("config_fingerprint") == stage_fingerprint(cfg, stage))


def run_all(
    cfg: PipelineConfig,
    run_dir: RunDir,
    force: bool = False,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[StageOutcome], None] | None = None,
    stages: Sequence[str] | None = None,
) -> list[StageOutcome]:
    """Run `stages` (default: every stage) in pipeline order, skipping those already completed for
    this config unless `force`."""
    outcomes = []
    for stage in [s for s in STAGES if stages is None or s in stages]:
        if not force and is_current(cfg, run_dir, stage):
            done = run_dir.completed(stage) or {}
            outcome = StageOutcome(
                stage,
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
