"""Training speed: the train stage's Unsloth and PEFT backends against a plain transformers baseline.

    python -m benchmarks.train_speed --config configs/default.yaml --steps 6
    python -m benchmarks.train_speed --config configs/default.yaml --steps 6 --rounds 3
    python -m benchmarks.train_speed --config configs/tiny.yaml --steps 2 --backends peft,baseline
    python -m benchmarks.train_speed --help

One run, one machine, one prepared data folder, the same model, LoRA settings, steps, batch, learning
rate and seed for every contestant:

- `unsloth` and `peft`: the toolkit's own training stage (`python run.py train`, TRL SFTTrainer,
  trainer/train.py), each in a fresh process with `train.backend=...` into its own run folder.
- `baseline`: plain transformers `Trainer` + PEFT LoRA in fp32, every sequence padded to
  `data.max_length` (padding="max_length"), random batches (no group-by-length), no Unsloth and no
  TRL: the setup of the published "Hugging Face" numbers. Also a fresh process, so nothing Unsloth
  patches at import leaks into it (benchmarks/train_speed_baseline.py).

Measured per contestant: trained (non-padding) tokens/s and s/step over the steady steps (from the
log of step 1 to the log of the last step: the first step's warm-up and the final evaluation and
checkpoint are outside the window), the peak RSS of its process tree (psutil, every 100 ms), the
ratio to the baseline, and model FLOPs utilisation (MFU) against this machine's measured fp32
matmul peak (torch, n x n, best of several). Model FLOPs per trained token for LoRA are taken as
4 x N_frozen + 6 x N_lora (forward 2N; backward through the frozen weights needs activation
gradients only, 2N; LoRA weights also get weight gradients), N counting the weights used in
matrix multiplies (the LM head, not the embedding lookup); attention-score FLOPs are left out,
as in the usual 6N rule (benchmarks/train_speed_measure.py).

On a machine whose speed drifts (a shared VM), `--rounds N` runs the whole sequence N times, each
round starting one contestant later, and reports every contestant by its lower-median round (with
two rounds, the slower), its every round, and the worst pairing: its slowest round over the
baseline's fastest.

Prints a table and writes JSON (`--out`, default benchmarks/results/train_speed-<timestamp>.json)
with the environment, settings, machine load and every contestant's numbers. The run folders go to
a temporary folder (`--work-dir` keeps them). Exit status: 0 every contestant ran, 1 some failed
(JSON still written), 2 a problem to fix.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.train_speed_baseline import baseline_child
from benchmarks.train_speed_contestants import prepare_once, run_baseline, run_stage_backend
from benchmarks.train_speed_measure import FLOPS_METHOD, machine_load, matmul_peak, mfu
from trainer.config import TrainConfig, choices
from trainer.errors import UserError
from trainer.runfolder import ROOT, cpu_bf16_units, environment, write_json

STAGE_BACKENDS = choices(
    TrainConfig, "backend"
)  # the train stage's; auto: the default config, probe included
CONTESTANTS = (*STAGE_BACKENDS, "baseline")
RESULTS_DIR = ROOT / "benchmarks" / "results"


# --- the parent: orchestration --------------------------------------------------------------------


def run_benchmark(
    config: Path,
    steps: int,
    contestants: list[str],
    work_dir: Path | None = None,
    overrides: list[str] | None = None,
    timeout_s: float = 3600,
    matmul_n: int = 1024,
    progress: Any = print,
    rounds: int = 1,
) -> dict[str, Any]:
    """Run every contestant on one shared prepared data folder (`rounds` times, interleaved); the
    report that `main` saves."""
    from trainer.config import load_config

    overrides = list(overrides or [])
    cfg = load_config(config, overrides)  # a bad config fails here, before anything runs
    keep = work_dir is not None
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="train-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        measured = _run_contestants(
            config, overrides, steps, contestants, work, timeout_s, matmul_n, progress, rounds
        )
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    _compare(measured["results"], measured["matmul_peak_by_dtype"])
    return {
        "benchmark": "train_speed",
        "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.train_speed " + " ".join(sys.argv[1:]),
        "environment": environment(),
        "settings": _settings(cfg, config, overrides, steps),
        "machine_load": measured["machine_load"],
        "matmul_peak": measured["matmul_peak"],
        "matmul_peak_by_dtype": measured["matmul_peak_by_dtype"],
        "mfu_method": "model FLOP/s over the measured matmul peak in the contestant's own precision "
        "(bf16 contestants against the bf16 peak, the fp32 baseline against the fp32 peak)",
        "flops_method": FLOPS_METHOD,
        "timing_method": "steady window: from the log of step 1 to the log of the last step (train stage: "
        "TensorBoard wall times; baseline: a callback at the same point); tokens = non-padding input tokens "
        "(Trainer include_num_input_tokens_seen='non_padding')",
        "rss_method": "psutil RSS of the contestant's process tree, every 100 ms (model load and evaluation included)",
        "rounds": rounds,
        "rounds_method": "each round runs every contestant once, in an order rotated by one per round; a "
        "contestant's figures are those of its lower-median round by tokens/s (with 2 rounds: the slower), "
        "`speedup_vs_baseline` divides the lower medians and `speedup_worst_pairing` its slowest round by "
        "the baseline's fastest",
        "work_dir": str(work) if keep else None,
        "results": measured["results"],
    }


def _run_contestants(
    config: Path,
    overrides: list[str],
    steps: int,
    contestants: list[str],
    work: Path,
    timeout_s: float,
    matmul_n: int,
    progress: Any,
    rounds: int = 1,
) -> dict[str, Any]:
    """The machine's load and matmul peak, one shared `prepare`, then each contestant in turn, the
    whole sequence `rounds` times (each round starts one contestant later, so no contestant always
    runs first or last while the machine's speed drifts)."""
    load_before = machine_load()
    progress(f"load before: {load_before}")
    peak = matmul_peak(matmul_n)
    progress(f"matmul peak: {peak['peak_flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['method']})")
    peaks = {"fp32": peak}
    if cpu_bf16_units():
        peaks["bf16"] = matmul_peak(matmul_n, dtype="bf16")
        progress(f"bf16 matmul peak: {peaks['bf16']['peak_flops_per_s'] / 1e9:.1f} GFLOP/s")
    progress("prepare: one shared data folder")
    prepared = prepare_once(config, overrides, work, timeout_s)
    by_name: dict[str, list[dict[str, Any]]] = {name: [] for name in contestants}
    for index in range(rounds):
        round_work = work / f"round-{index + 1}" if rounds > 1 else work
        round_work.mkdir(parents=True, exist_ok=True)
        shift = index % len(contestants)
        for name in contestants[shift:] + contestants[:shift]:
            label = f"{name} (round {index + 1}/{rounds})" if rounds > 1 else name
            progress(f"{label}: training {steps} steps ...")
            t0 = time.perf_counter()
            if name == "baseline":
                one = run_baseline(config, overrides, prepared, round_work, steps, timeout_s)
            else:
                one = run_stage_backend(name, config, overrides, prepared, round_work, steps, timeout_s)
            one["process_wall_s"] = round(time.perf_counter() - t0, 1)
            progress(f"{label}: {one['status']} in {one['process_wall_s']} s")
            by_name[name].append(one)
    return {
        "machine_load": {"before": load_before, "after": machine_load()},
        "matmul_peak": peak,
        "matmul_peak_by_dtype": peaks,
        "results": [combine_rounds(by_name[name]) for name in contestants],
    }


def combine_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One contestant's rounds as one result: the lower-median round by steady tokens/s (the first
    failed round when any failed), with every round's tokens/s and s/step under `rounds`."""
    if len(runs) == 1:
        return runs[0]
    failed = [r for r in runs if r["status"] != "ok"]
    if failed:
        chosen = dict(failed[0])
    else:
        ranked = sorted(runs, key=lambda r: r["steady"]["tokens_per_s"])
        chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["rounds"] = [
        {
            "round": i + 1,
            "status": r["status"],
            "tokens_per_s": r.get("steady", {}).get("tokens_per_s"),
            "s_per_step": r.get("steady", {}).get("s_per_step"),
        }
        for i, r in enumerate(runs)
    ]
    return chosen


def _compare(results: list[dict[str, Any]], peaks: dict[str, dict[str, Any]]) -> None:
    """Add each finished contestant's speed-up over the baseline and its MFU against the matmul peak
    in its own precision (in place)."""
    base = next((r for r in results if r["contestant"] == "baseline" and r["status"] == "ok"), None)
    base_tps = base["steady"].get("tokens_per_s") if base else None
    for r in results:
        if r["status"] != "ok":
            continue
        tps = r["steady"].get("tokens_per_s")
        r["speedup_vs_baseline"] = round(tps / base_tps, 3) if tps and base_tps else None
        if base and "rounds" in r and "rounds" in base:
            slowest = min(x["tokens_per_s"] for x in r["rounds"])
            fastest_base = max(x["tokens_per_s"] for x in base["rounds"])
            r["speedup_worst_pairing"] = round(slowest / fastest_base, 3)
        peak = peaks.get(r.get("precision", "fp32"), {}).get("peak_flops_per_s")
        r.update(mfu(tps, r, peak))


def _settings(cfg: Any, config: Path, overrides: list[str], steps: int) -> dict[str, Any]:
    """The recipe every contestant shares, as the report lists it."""
    t = cfg.train
    return {
        "config": str(config),
        "overrides": overrides,
        "model": cfg.model.name,
        "steps": steps,
        "per_device_batch_size": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "max_length": cfg.data.max_length,
        "learning_rate": t.learning_rate,
        "warmup_steps": t.warmup_steps,
        "lr_scheduler": t.lr_scheduler,
        "optimizer": t.optimizer,
        "seed": t.seed,
        "lora": {"r": t.lora_r, "alpha": t.lora_alpha, "dropout": t.lora_dropout},
        "target_modules": t.target_modules,
        "group_by_length_train_stage": t.group_by_length,
        "num_threads": t.num_threads or os.cpu_count(),
    }


# --- command line ---------------------------------------------------------------------------------


def _contestants(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in CONTESTANTS]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"unknown contestant(s) {', '.join(bad) or '(none)'}: choose from {', '.join(CONTESTANTS)}"
        )
    return names


def _steps(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            "needs at least 2 steps: the first one is warm-up, outside the window"
        )
    return value


def _rounds(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("needs at least 1 round")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.train_speed",
        description="Training speed on one machine: the train stage's unsloth and peft backends against a "
        "plain transformers Trainer + PEFT fp32 baseline padded to max length. Trained tokens/s, s/step, "
        "peak RSS, speed-up over the baseline and MFU against a measured fp32 matmul peak.",
        epilog="Example: python -m benchmarks.train_speed --config configs/default.yaml --steps 6",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=ROOT / "configs" / "default.yaml",
        help="pipeline config: model, data, LoRA, batch, lr, seed (default: configs/default.yaml)",
    )
    p.add_argument(
        "--steps", type=_steps, default=6, help="optimizer steps per contestant, at least 2 (default: 6)"
    )
    p.add_argument(
        "--backends",
        type=_contestants,
        default=list(CONTESTANTS),
        help=f"comma-separated contestants from {', '.join(CONTESTANTS)} (default: all four; auto is the "
        "default configuration, train.backend=auto with its probe)",
    )
    p.add_argument(
        "--rounds",
        type=_rounds,
        default=1,
        help="run every contestant this many times, interleaved; each is reported by its lower-median "
        "round, with the spread (default: 1)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results JSON (default: benchmarks/results/train_speed-<timestamp>.json)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the run folders and logs here (default: a temporary folder, deleted afterwards)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every contestant, repeatable (e.g. --override data.max_length=256)",
    )
    p.add_argument(
        "--timeout", type=float, default=3600, help="seconds allowed per contestant process (default: 3600)"
    )
    p.add_argument(
        "--matmul-n", type=int, default=1024, help="matrix size of the fp32 peak measurement (default: 1024)"
    )
    p.add_argument("--baseline-child", type=Path, help=argparse.SUPPRESS)  # internal: the baseline process
    return p


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report["settings"]
    several_rounds = report.get("rounds", 1) > 1
    table = Table(
        title=f"Training speed: {s['model']}, {s['steps']} steps, batch {s['per_device_batch_size']}"
        f"x{s['gradient_accumulation_steps']}, max_length {s['max_length']}, LoRA r={s['lora']['r']}"
    )
    for col in (
        "contestant",
        "precision",
        "status",
        "tokens/s",
        "s/step",
        "peak RSS MiB",
        "vs baseline",
        "MFU",
        *(["rounds tokens/s", "worst pairing"] if several_rounds else []),
    ):
        table.add_column(col, justify="left" if col in ("contestant", "precision", "status") else "right")
    for r in report["results"]:
        steady = r.get("steady", {})
        table.add_row(
            r["contestant"],
            r.get("precision", "-"),
            r["status"],
            _fmt(steady.get("tokens_per_s"), ".1f"),
            _fmt(steady.get("s_per_step"), ".2f"),
            _fmt(r["peak_rss_bytes"] / 2**20 if r.get("peak_rss_bytes") else None, ".0f"),
            _fmt(r.get("speedup_vs_baseline"), ".2f") + ("x" if r.get("speedup_vs_baseline") else ""),
            _fmt(r["mfu"] * 100 if r.get("mfu") is not None else None, ".1f") + ("%" if r.get("mfu") else ""),
            *(
                [
                    " / ".join(_fmt(x["tokens_per_s"], ".1f") for x in r.get("rounds", [])),
                    _fmt(r.get("speedup_worst_pairing"), ".2f")
                    + ("x" if r.get("speedup_worst_pairing") else ""),
                ]
                if several_rounds
                else []
            ),
        )
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    peak = report["matmul_peak"]
    for dtype, one in report.get("matmul_peak_by_dtype", {"fp32": peak}).items():
        console.print(f"{dtype} matmul peak {one['peak_flops_per_s'] / 1e9:.1f} GFLOP/s ({one['method']})")
    for r in report["results"]:
        if r.get("backend_choice"):
            c = r["backend_choice"]
            console.print(
                f"{r['contestant']}: {c.get('backend')} ({c.get('reason')}), probe {c.get('probe_cost_s')} s"
            )
    console.print(
        f"load before/after: {report['machine_load']['before']} / {report['machine_load']['after']}"
    )
    for r in report["results"]:
        if r["status"] != "ok":
            console.print(
                f"[red]{r['contestant']} failed[/red]: {r.get('error', '')}\n{r.get('log_tail', '')}"
            )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.baseline_child:
        result = baseline_child(args.baseline_child, args.config, args.steps, args.override)
        write_json(args.baseline_child / "baseline.json", result)
        return 0
    out = args.out or RESULTS_DIR / f"train_speed-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    try:
        report = run_benchmark(
            args.config,
            args.steps,
            args.backends,
            work_dir=args.work_dir,
            overrides=args.override,
            timeout_s=args.timeout,
            matmul_n=args.matmul_n,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
            rounds=args.rounds,
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    write_json(out, report)
    print_table(report)
    print(f"Results: {out}")
    return 0 if all(r["status"] == "ok" for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
