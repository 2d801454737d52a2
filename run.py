#!/usr/bin/env python3
"""Command line of the toolkit: `python run.py all` runs every stage; each stage also runs alone.

    python run.py all                                  # the embedded default, start to finish
    python run.py prepare --config configs/tiny.yaml   # one stage
    python run.py train train.max_steps=20             # key=value overrides the YAML
    python run.py test                                 # the test suite
    python run.py compare outputs/a outputs/b          # a Chinese report comparing finished runs
    python run.py sweep --config configs/tiny.yaml train.lora_r=4,8 train.learning_rate=1e-3,5e-3

Data-parallel training on several processes (DDP) is for the `train` stage (and `prepare`, which
then runs once, on the main process):

    accelerate launch --config_file configs/accelerate/ddp_cpu.yaml run.py train --config configs/tiny.yaml

The first call creates `.venv/` (see trainer/bootstrap.py) and re-runs itself inside it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from trainer import bootstrap  # noqa: E402  (stdlib only: safe before the environment exists)


def _reexec_in_venv() -> None:
    if bootstrap.in_project_venv() or os.environ.get("FT_NO_BOOTSTRAP") == "1":
        return
    python = bootstrap.ensure_env()
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def _parser(stages) -> argparse.ArgumentParser:
    """The commands: `all`, one per stage of `stages` (stages.py), `compare`, `sweep` and `test`."""
    from trainer.config import ReportConfig, choices

    parser = argparse.ArgumentParser(
        prog="python run.py",
        description="Local LoRA fine-tuning of a Chinese QA assistant: prepare -> train -> evaluate -> "
        "export -> deploy -> benchmark -> report. Results go to outputs/<run_name>/.",
        epilog="Overrides: any config key as section.key=value after the command, "
        "e.g. `python run.py all train.max_steps=50 data.assistant_name=小知`.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {"all": "run every stage in order, skipping stages already completed for this config"}
    commands.update({stage.name: stage.help for stage in stages})
    for name, desc in commands.items():
        p = sub.add_parser(name, help=desc, description=desc)
        p.add_argument(
            "--config",
            default=str(ROOT / "configs" / "default.yaml"),
            help="YAML config (default: configs/default.yaml, the embedded CPU default)",
        )
        p.add_argument("--run-dir", help="run folder (default: outputs/<run_name>)")
        p.add_argument(
            "--force", action="store_true", help="rerun stages even if already completed for this config"
        )
        if name in ("report", "all"):
            p.add_argument(
                "--format", choices=choices(ReportConfig, "format"), help="report format (report.format)"
            )
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    _compare_and_sweep_parsers(sub)
    t = sub.add_parser("test", help="run the test suite (pytest); extra arguments go to pytest")
    t.add_argument("pytest_args", nargs=argparse.REMAINDER)
    return parser


def _compare_and_sweep_parsers(sub) -> None:
    from trainer.config import ReportConfig, choices

    desc = "compare finished runs: one Chinese report (Markdown and PDF) of their differences and a verdict"
    c = sub.add_parser("compare", help=desc, description=desc)
    c.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run folders whose evaluate stage completed"
    )
    c.add_argument("--out", help="report folder (default: outputs/compare-<run folder names>)")
    c.add_argument("--format", choices=choices(ReportConfig, "format"), default="both", help="report format")
    desc = (
        "train and evaluate every point of a grid on one shared prepared split, then compare them "
        "(resumes like `all`; Ctrl-C stops cleanly)"
    )
    s = sub.add_parser("sweep", help=desc, description=desc)
    s.add_argument(
        "--config", default=str(ROOT / "configs" / "default.yaml"), help="YAML config of every point"
    )
    s.add_argument("--sweep-dir", help="sweep folder (default: outputs/sweep-<run_name>)")
    s.add_argument("--full", action="store_true", help="also export, deploy and benchmark every point")
    s.add_argument("--max-minutes", type=float, default=0.0, help="total time budget (0: none)")
    s.add_argument("--force", action="store_true", help="rerun stages even if already completed")
    s.add_argument("grid", nargs="+", metavar="KEY=V1,V2", help="grid keys, e.g. train.lora_r=8,16")


def _compare(args) -> int:
    from reporting import compare
    from stages import reported

    paths = [Path(p) for p in args.run_dirs]
    out = (
        Path(args.out)
        if args.out
        else ROOT / "outputs" / ("compare-" + "+".join(p.resolve().name for p in paths))
    )
    result = compare.run(paths, out, reported(), args.format)
    _print_compare(result)
    return 0


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when it is below it."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def _print_compare(result) -> None:
    from rich.console import Console

    console = Console(soft_wrap=True)
    for warning in result.warnings:
        console.print(f"[bold red]warning[/bold red] {warning}", markup=True, highlight=False)
    console.print(f"best on ROUGE-L after tuning: {result.best_by_primary}", highlight=False)
    for pair in result.pairs:
        if pair["different_items"]:
            verdict = "not on the same test items: no significance claimed"
        elif pair["low"] is None:
            verdict = f"too few shared items ({pair['items']}) for an interval"
        else:
            verdict = "significant" if pair["significant"] else "not significant (interval contains 0)"
            verdict = f"95% paired bootstrap [{pair['low']:+.2f}, {pair['high']:+.2f}] over {pair['items']} items: {verdict}"
        console.print(f"  vs {pair['other']}: {pair['difference']:+.2f} points, {verdict}", highlight=False)
    console.print(f"lowest validation loss: {result.best_by_val_loss}", highlight=False)
    names = " and ".join(_shown(Path(result.out_dir) / f) for f in result.files.values())
    pages = f" ({result.pages} pages)" if result.pages else ""
    console.print(f"Comparison report: {names}{pages}", highlight=False)


def _sweep(args) -> int:
    from stages import STAGES
    from trainer import sweep

    result = sweep.run(
        Path(args.config),
        args.grid,
        STAGES,
        Path(args.sweep_dir) if args.sweep_dir else None,
        full=args.full,
        max_minutes=args.max_minutes,
        force=args.force,
        on_point=sweep.print_table,
    )
    print(f"best point by validation loss: {result.best_by_val_loss}")
    print(f"best point by ROUGE-L after tuning: {result.best_by_primary}")
    if result.stopped:
        print(f"stopped early: {result.stopped}; run the same command again to continue")
    failed = [p for p in result.points if p.status == "failed"]
    for p in failed:
        print(f"point {p.name} failed: {p.note} (its stage files say more)", file=sys.stderr)
    if len(result.evaluated) < 2:
        print(f"no comparison report: {len(result.evaluated)} point(s) evaluated, at least two are needed")
        return 1 if failed or result.stopped else 0
    from reporting import compare
    from stages import reported

    _print_compare(compare.run(result.evaluated, result.sweep_dir / "comparison", reported()))
    return 1 if failed else 0


def _summary(outcomes, run_dir, total_s: float) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(stderr=False)
    table = Table(title=f"Run folder: {run_dir.path}")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("result")
    for o in outcomes:
        note = o.results.get("headline", "") if o.results else ""
        status = o.status if o.status != "skipped" else "skipped (done before)"
        table.add_row(o.name, status, f"{o.duration_s:.1f} s", note)
    console.print(table)
    for o in outcomes:
        for line in (o.results or {}).get("notes", []):
            console.print(f"[yellow]note[/yellow] {o.name}: {escape(line)}")
        for line in (o.results or {}).get("warnings", []):
            console.print(f"[bold red]warning[/bold red] {o.name}: {escape(line)}")
    report = run_dir / "report.pdf"
    if report.exists() or (run_dir / "report.md").exists():
        console.print(f"Report: {run_dir / 'report.md'}" + (f" and {report}" if report.exists() else ""))
    console.print(f"Total time this invocation: {total_s:.1f} s")


def _preload_unsloth(cfg, run_dir, args) -> None:
    """Unsloth patches trl/transformers/peft at import, so it must load before `prepare` imports them."""
    from stages import by_name
    from trainer.pipeline import is_current

    will_train = args.command == "train" or (
        args.command == "all" and (args.force or not is_current(cfg, run_dir, by_name("train")))
    )
    if will_train and cfg.train.backend != "peft":
        from trainer import console
        from trainer.backends import backend_reason, choose_backend
        from trainer.errors import UserError
        from trainer.processes import is_main_process

        # auto on a CPU: the backend probe (child processes) decides first, so that only the
        # faster backend's imports happen in this process; the train stage reuses the choice.
        # Unsloth's banner and import-time warnings go to logs/training.log.
        main = is_main_process()
        with (
            console.details_to_log(run_dir, write=main),
            console.stage_line("backend", show=main) as line,
            console.printed_to_log(run_dir, write=main),
            contextlib.suppress(UserError),  # the train stage reports it, with its fix
        ):
            line.conclude(backend_reason(choose_backend(cfg, run_dir)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["test"]:
        import pytest

        os.chdir(ROOT)
        return int(pytest.main(argv[1:]))

    from stages import STAGES, by_name
    from trainer.config import load_config
    from trainer.errors import UserError
    from trainer.pipeline import run_all, run_stage
    from trainer.runfolder import RunDir

    args = _parser(STAGES).parse_args(argv)
    try:
        if args.command in ("compare", "sweep"):
            return _compare(args) if args.command == "compare" else _sweep(args)
        from trainer.processes import is_main_process, world_size

        if world_size() > 1 and args.command != "train":
            if args.command != "prepare":
                raise UserError(
                    f"`{args.command}` does not run in a multi-process launch (WORLD_SIZE={world_size()}).",
                    fix=f"launch only `train` with accelerate/torchrun; run `python run.py {args.command}` "
                    "as one process",
                )
            if not is_main_process():
                return 0  # prepare runs once, on the main process
        overrides = list(args.overrides)
        if getattr(args, "format", None):
            overrides.append(f"report.format={args.format}")
        cfg = load_config(args.config, overrides)
        run_dir = RunDir(args.run_dir or ROOT / "outputs" / cfg.run_name)
        from trainer.pipeline import prepare_run_dir

        prepare_run_dir(cfg, run_dir, args.command)
        _preload_unsloth(cfg, run_dir, args)
        t0 = time.perf_counter()
        if args.command == "all":
            print(f"Running all stages into {run_dir.path}", flush=True)
            outcomes = run_all(STAGES, cfg, run_dir, force=args.force)
        else:
            outcomes = [run_stage(by_name(args.command), cfg, run_dir, force=args.force)]
        if is_main_process():
            _summary(outcomes, run_dir, time.perf_counter() - t0)
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    _reexec_in_venv()
    sys.exit(main())
