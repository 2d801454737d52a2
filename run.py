#!/usr/bin/env python3
"""Command line of the toolkit: `python run.py all` runs every stage; each stage also runs alone.

    python run.py all                                  # the embedded default, start to finish
    python run.py prepare --config configs/tiny.yaml   # one stage
    python run.py train train.max_steps=20             # key=value overrides the YAML
    python run.py test                                 # the test suite

Data-parallel training on several processes (DDP) is for the `train` stage (and `prepare`, which
then runs once, on the main process):

    accelerate launch --config_file configs/accelerate/ddp_cpu.yaml run.py train --config configs/tiny.yaml

The first call creates `.venv/` (see trainer/bootstrap.py) and re-runs itself inside it.
"""

from __future__ import annotations

import argparse
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


def _parser(stages: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python run.py",
        description="Local LoRA fine-tuning of a Chinese QA assistant: prepare -> train -> evaluate -> "
        "export -> deploy -> benchmark -> report. Results go to outputs/<run_name>/.",
        epilog="Overrides: any config key as section.key=value after the command, "
        "e.g. `python run.py all train.max_steps=50 data.assistant_name=小知`.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {"all": "run every stage in order, skipping stages already completed for this config"}
    commands.update({name: desc for name, (_, desc) in stages.items()})
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
            p.add_argument("--format", choices=["md", "pdf", "both"], help="report format (report.format)")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    t = sub.add_parser("test", help="run the test suite (pytest); extra arguments go to pytest")
    t.add_argument("pytest_args", nargs=argparse.REMAINDER)
    return parser


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
    from trainer.pipeline import is_current

    will_train = args.command == "train" or (
        args.command == "all" and (args.force or not is_current(cfg, run_dir, "train"))
    )
    if will_train and cfg.train.backend != "peft":
        from trainer.backends import unsloth_available

        unsloth_available()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["test"]:
        import pytest

        os.chdir(ROOT)
        return int(pytest.main(argv[1:]))

    from trainer.config import load_config
    from trainer.errors import UserError
    from trainer.pipeline import STAGES, run_all, run_stage
    from trainer.runfolder import RunDir

    args = _parser(STAGES).parse_args(argv)
    try:
        from trainer.pipeline import is_main_process, world_size

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
            outcomes = run_all(
                cfg,
                run_dir,
                force=args.force,
                on_start=lambda s: print(f"==> {s}: {STAGES[s][1]}", flush=True),
            )
        else:
            outcomes = [run_stage(args.command, cfg, run_dir, force=args.force)]
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
