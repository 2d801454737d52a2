"""`python run.py sweep --config FILE [--sweep-dir DIR] [--full] [--max-minutes M] KEY=V1,V2 [...]`:
train and evaluate every point of a hyperparameter grid on one shared prepared split.

Reads the config file and the grid; writes one sweep folder (`outputs/sweep-<run_name>/` by default):

- `prepared/`: the one `prepare` run every point shares (the split is identical across points:
  each point's prepare fingerprint must equal the shared one before its files are copied in);
- `<point>/`: a run folder per grid point (`lora_r-8__learning_rate-0.001`), with the shared
  `data/`, `prompt_format.json` and `prepare.json`, then `train` and `evaluate` (with `--full` also
  export, deploy and benchmark) run by the pipeline's runner, so a completed point is skipped the
  next time, exactly like `run.py all`;
- `sweep.json`: the grid, each point's status, and the best point by validation loss and by the
  primary metric (ROUGE-L after tuning). run.py then writes the comparison report of the evaluated
  points into `comparison/` (reporting/compare.py).

Every key and value is checked before anything runs: an unknown key, a value of the wrong type and
a key of the `model` or `data` sections (they change what prepare produces, so the points could not
share one split) stop the sweep with one message. Ctrl-C stops after recording the interrupted
stage; the same command continues. `--max-minutes` starts no new stage once the budget is spent.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.config import PipelineConfig, load_config, parse_override
from trainer.errors import UserError, problem_list
from trainer.pipeline import Stage, fingerprint, is_current, prepare_run_dir, run_all, run_stage
from trainer.results import EvaluateResult, TrainResult, load_result
from trainer.runfolder import ROOT, RunDir, atomic_dir, atomic_path, write_json

SHARED_PREPARE = "prepared"
POINT_STAGES = ("train", "evaluate")
FULL_STAGES = ("train", "evaluate", "export", "deploy", "benchmark")
PRIMARY_METRIC = "rougeL"


@dataclass
class Point:
    """One grid point: its overrides, resolved config and run folder, and how it went."""

    name: str
    overrides: list[str]
    cfg: PipelineConfig
    run_dir: RunDir
    status: str = "pending"  # pending | completed | skipped | interrupted | failed | not started
    duration_s: float = 0.0
    note: str = ""

    def summary(self) -> dict[str, Any]:
        """Steps, validation loss and the primary metric, read from the point's own stage files."""
        train = load_result(self.run_dir, "train", TrainResult)
        evaluate = load_result(self.run_dir, "evaluate", EvaluateResult)
        out: dict[str, Any] = {"steps": None, "val_loss": None, "primary": None}
        if train is not None and train.status == "completed":
            r = train.results
            out["steps"] = r.global_step if isinstance(r.global_step, int) else None
            best = r.best_checkpoint.eval_loss
            last = r.eval_loss_last
            out["val_loss"] = next((v for v in (best, last) if isinstance(v, (int, float))), None)
        if evaluate is not None and evaluate.status == "completed":
            found = [m.after for m in evaluate.results.metrics if m.key == PRIMARY_METRIC]
            out["primary"] = found[0] if found and isinstance(found[0], (int, float)) else None
        return out


@dataclass
class SweepResult:
    sweep_dir: Path
    points: list[Point]
    best_by_val_loss: str | None = None
    best_by_primary: str | None = None
    stopped: str = ""  # why the sweep stopped before every point ran ("" when it did not)
    evaluated: list[Path] = field(default_factory=list)  # points whose evaluate completed


def split_values(raw: str) -> list[str]:
    """`8,16` -> ["8", "16"]; commas inside brackets stay (`[q_proj,v_proj],[q_proj]`)."""
    values, depth, current = [], 0, ""
    for ch in raw:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return [v for v in values if v]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def parse_grid(
    args: list[str], config_path: Path, prepare_sections: Sequence[str]
) -> list[tuple[str, list[str]]]:
    """(key, values) per grid argument, every key and value checked against the config types; one
    UserError lists every problem. Keys of `prepare_sections` (those that decide what prepare
    produces) cannot vary: the points share one prepared split."""
    problems: list[str] = []
    axes: list[tuple[str, list[str]]] = []
    for text in args:
        try:
            keys, raw = parse_override(text)
        except UserError as exc:
            problems.append(str(exc).splitlines()[0])
            continue
        key, values = ".".join(keys), split_values(raw)
        if keys[0] in prepare_sections or keys == ["run_name"]:
            problems.append(
                f"'{key}' cannot be swept: the {keys[0]} section decides what prepare produces and the "
                "points share one prepared split (run one sweep per data/model setting)"
            )
            continue
        if any(key == k for k, _ in axes):
            problems.append(f"'{key}' is given twice (list all its values once: {key}=v1,v2)")
            continue
        if not values or len(set(values)) != len(values):
            problems.append(f"'{key}' needs distinct values, got {raw!r}")
            continue
        for value in values:
            try:
                load_config(config_path, [f"{key}={value}"])
            except UserError as exc:
                problem = str(exc).splitlines()[0].replace("command line: ", "").rstrip(".")
                if problem not in problems:
                    problems.append(problem)
        axes.append((key, values))
    if not problems and not any(len(v) > 1 for _, v in axes):
        problems.append("no key has two or more values: a sweep needs at least two points")
    if problems:
        raise UserError(
            problem_list("sweep", problems),
            fix="write each grid key as section.key=v1,v2 with a key of trainer/config.py outside the "
            "model and data sections, e.g. train.lora_r=8,16 train.learning_rate=1e-3,5e-3",
        )
    return axes


def plan(
    config_path: Path, grid: list[str], sweep_dir: Path | None, prepare: Stage
) -> tuple[PipelineConfig, list[Point]]:
    """The base config and every point, all validated, before anything runs or is written."""
    base = load_config(config_path)
    axes = parse_grid(grid, config_path, prepare.sections)
    fixed = [f"{k}={v[0]}" for k, v in axes if len(v) == 1]
    varied = [(k, v) for k, v in axes if len(v) > 1]
    root = sweep_dir or ROOT / "outputs" / f"sweep-{base.run_name}"
    points = []
    for combo in itertools.product(*[v for _, v in varied]):
        pairs = [(k, v) for (k, _), v in zip(varied, combo, strict=True)]
        name = "__".join(f"{_slug(k.split('.')[-1])}-{_slug(v)}" for k, v in pairs)
        overrides = [*fixed, *(f"{k}={v}" for k, v in pairs)]
        cfg = load_config(config_path, [*overrides, f"run_name={base.run_name}-{name}"])
        points.append(Point(name, overrides, cfg, RunDir(root / name)))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise UserError(
            f"sweep: two grid points would share a folder name ({', '.join(sorted(names))}).",
            fix="write the values so that they differ in letters, digits, '.', '_' or '-'",
        )
    return load_config(config_path, fixed), points


def _share_prepared(shared: RunDir, point: Point, prepare: Stage, shared_fingerprint: str) -> None:
    """Copy the shared split into the point's folder, after checking that the point's data settings
    give the same prepare fingerprint. prepare.json is written last, so a half copy is never taken
    for a prepared folder."""
    if fingerprint(point.cfg, prepare) != shared_fingerprint:
        raise UserError(
            f"sweep: point {point.name} would prepare different data than {shared.path}.",
            fix="sweep only keys outside the model and data sections",
        )
    if is_current(point.cfg, point.run_dir, prepare) and (point.run_dir / "data").is_dir():
        return
    with atomic_dir(point.run_dir / "data") as tmp:
        shutil.copytree(shared / "data", tmp, dirs_exist_ok=True)
    for name in ("prompt_format.json", "prepare.json"):
        with atomic_path(point.run_dir / name) as tmp:
            shutil.copyfile(shared / name, tmp)


def _shown(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


class _OutOfTime(Exception):
    """The sweep's --max-minutes are spent: no new stage starts."""


def _prepare_shared(base: PipelineConfig, prepare: Stage, sweep_dir: Path, force: bool) -> tuple[RunDir, str]:
    shared = RunDir(sweep_dir / SHARED_PREPARE)
    prepare_run_dir(base, shared, "prepare")
    if force or not is_current(base, shared, prepare):
        print(f"==> prepare (shared by every point): {_shown(shared.path)}", flush=True)
        run_stage(prepare, base, shared, force=force)
    done = shared.completed("prepare") or {}
    return shared, str(done.get("config_fingerprint"))


def run(
    config_path: Path,
    grid: list[str],
    stages: Sequence[Stage],
    sweep_dir: Path | None = None,
    *,
    full: bool = False,
    max_minutes: float = 0.0,
    force: bool = False,
    on_point: Callable[[list[Point]], None] | None = None,
) -> SweepResult:
    """Run the grid with `stages` (the pipeline's, `stages.py`); `on_point` gets every point after
    each one finishes (the live table)."""
    by_name = {s.name: s for s in stages}
    base, points = plan(config_path, grid, sweep_dir, by_name["prepare"])
    root = points[0].run_dir.path.parent
    if any(p.cfg.train.backend != "peft" for p in points):
        from trainer.backends import unsloth_available

        unsloth_available()  # Unsloth patches trl/transformers/peft at import: before prepare imports them
    deadline = time.monotonic() + max_minutes * 60 if max_minutes > 0 else None
    result = SweepResult(root, points)
    _write_sweep(result, grid)
    shared, shared_fingerprint = _prepare_shared(base, by_name["prepare"], root, force)
    point_stages = [by_name[name] for name in (FULL_STAGES if full else POINT_STAGES)]

    def check_time(stage: Stage) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise _OutOfTime(stage.name)

    for point in points:
        t0 = time.perf_counter()
        try:
            prepare_run_dir(point.cfg, point.run_dir, "all")
            _share_prepared(shared, point, by_name["prepare"], shared_fingerprint)
            outcomes = run_all(point_stages, point.cfg, point.run_dir, force=force, on_start=check_time)
            point.status = "skipped" if all(o.status == "skipped" for o in outcomes) else "completed"
        except _OutOfTime as exc:
            point.status, point.note = "not started", f"--max-minutes={max_minutes:g} spent before {exc}"
            result.stopped = point.note
        except Exception as exc:  # a failed point is recorded; the others still run
            point.status, point.note = (
                "failed",
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            )
        except KeyboardInterrupt:
            point.status = "interrupted"
            result.stopped = "interrupted (Ctrl-C)"
            _finish(result, grid, on_point)
            raise
        point.duration_s = time.perf_counter() - t0
        if on_point:
            on_point(points)
        if result.stopped:
            break
    return _finish(result, grid, None)


def _finish(
    result: SweepResult, grid: list[str], on_point: Callable[[list[Point]], None] | None
) -> SweepResult:
    summaries = {p.name: p.summary() for p in result.points}
    result.best_by_val_loss = _best(summaries, "val_loss", lowest=True)
    result.best_by_primary = _best(summaries, "primary", lowest=False)
    result.evaluated = [p.run_dir.path for p in result.points if p.run_dir.completed("evaluate")]
    _write_sweep(result, grid)
    if on_point:
        on_point(result.points)
    return result


def _best(summaries: dict[str, dict[str, Any]], key: str, *, lowest: bool) -> str | None:
    """The first point with the lowest/highest `key`, and the points tied with it."""
    scored = {name: s[key] for name, s in summaries.items() if s[key] is not None}
    if not scored:
        return None
    top = min(scored.values()) if lowest else max(scored.values())
    names = [name for name, value in scored.items() if value == top]
    return names[0] + (f" (tied with {', '.join(names[1:])})" if len(names) > 1 else "")


def _write_sweep(result: SweepResult, grid: list[str]) -> None:
    write_json(
        result.sweep_dir / "sweep.json",
        {
            "grid": grid,
            "points": [
                {
                    "name": p.name,
                    "overrides": p.overrides,
                    "run_dir": p.name,
                    "status": p.status,
                    "duration_s": round(p.duration_s, 3),
                    "note": p.note,
                    **p.summary(),
                }
                for p in result.points
            ],
            "best_by_val_loss": result.best_by_val_loss,
            "best_by_primary": result.best_by_primary,
            "primary_metric": f"{PRIMARY_METRIC} after tuning (evaluate.json)",
            "stopped": result.stopped or None,
        },
    )


def print_table(points: list[Point]) -> None:
    """The table of finished points (printed again after each point: the sweep's live view)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Sweep points")
    for column in ("point", "status", "steps", "val loss", f"{PRIMARY_METRIC} after", "time"):
        table.add_column(column, justify="left" if column in ("point", "status") else "right")
    for p in points:
        s = p.summary()
        status = p.status + (f" ({p.note})" if p.note else "")
        table.add_row(
            p.name,
            status,
            "" if s["steps"] is None else str(s["steps"]),
            "" if s["val_loss"] is None else f"{s['val_loss']:.4f}",
            "" if s["primary"] is None else f"{s['primary']:.2f}",
            f"{p.duration_s:.1f} s" if p.status not in ("pending", "not started") else "",
        )
    Console(width=max(Console().width, 140)).print(table)
