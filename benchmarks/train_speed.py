"""Training speed: the train stage's Unsloth and PEFT backends against a plain transformers baseline.

    python -m benchmarks.train_speed --config configs/default.yaml --steps 6
    python -m benchmarks.train_speed --config configs/tiny.yaml --steps 2 --backends peft,baseline
    python -m benchmarks.train_speed --help

One run, one machine, one prepared data folder, the same model, LoRA settings, steps, batch, learning
rate and seed for every contestant:

- `unsloth` and `peft`: the toolkit's own training stage (`python run.py train`, TRL SFTTrainer,
  trainer/train.py), each in a fresh process with `train.backend=...` into its own run folder.
- `baseline`: plain transformers `Trainer` + PEFT LoRA in fp32, every sequence padded to
  `data.max_length` (padding="max_length"), random batches (no group-by-length), no Unsloth and no
  TRL: the setup of the published "Hugging Face" numbers. Also a fresh process, so nothing Unsloth
  patches at import leaks into it.

Measured per contestant: trained (non-padding) tokens/s and s/step over the steady steps (from the
log of step 1 to the log of the last step: the first step's warm-up and the final evaluation and
checkpoint are outside the window), the peak RSS of its process tree (psutil, every 100 ms), the
ratio to the baseline, and model FLOPs utilisation (MFU) against this machine's measured fp32
matmul peak (torch, n x n, best of several). Model FLOPs per trained token for LoRA are taken as
4 x N_frozen + 6 x N_lora (forward 2N; backward through the frozen weights needs activation
gradients only, 2N; LoRA weights also get weight gradients), N counting the weights used in
matrix multiplies (the LM head, not the embedding lookup); attention-score FLOPs are left out,
as in the usual 6N rule.

Prints a table and writes JSON (`--out`, default benchmarks/results/train_speed-<timestamp>.json)
with the environment, settings, machine load and every contestant's numbers. The run folders go to
a temporary folder (`--work-dir` keeps them). Exit status: 0 every contestant ran, 1 some failed
(JSON still written), 2 a problem to fix.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.roofline import best_of
from trainer.errors import UserError
from trainer.runfolder import ROOT, environment, write_json

CONTESTANTS = ("unsloth", "peft", "baseline")
STAGE_BACKENDS = ("unsloth", "peft")
RESULTS_DIR = ROOT / "benchmarks" / "results"
FLOPS_METHOD = (
    "4 x N_frozen + 6 x N_lora per trained token (LoRA: no weight gradients for the frozen base); "
    "N = weights in matrix multiplies (LM head included, embedding lookup not); attention scores left out"
)


# --- the parent: orchestration --------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_logged(cmd: list[str], log_path: Path, timeout_s: float) -> dict[str, Any]:
    """Run a child process with its output in `log_path`, sampling its tree's peak RSS."""
    from benchmarks.memory import PeakSampler

    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(), cwd=ROOT)
        sampler = PeakSampler(proc.pid).start()
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            returncode = None
        finally:
            sampler.stop()
    return {"returncode": returncode, "peak_rss_bytes": sampler.peak_rss_bytes or None}


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def _prepare(config: Path, overrides: list[str], work: Path, timeout_s: float) -> Path:
    """One `prepare` for everybody: the contestants copy its splits."""
    run_dir = work / "prepared"
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "prepare",
        "--config",
        str(config),
        "--run-dir",
        str(run_dir),
    ]
    done = _run_logged([*cmd, *overrides], work / "prepare.log", timeout_s)
    if done["returncode"] != 0:
        raise UserError(f"`prepare` failed:\n{_tail(work / 'prepare.log')}")
    return run_dir


def _seed_run_dir(prepared: Path, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(prepared / "data", run_dir / "data")
    shutil.copy2(prepared / "prompt_format.json", run_dir / "prompt_format.json")


def _stage_overrides(steps: int) -> list[str]:
    # Log every step (the clock), evaluate and checkpoint only at the last step, after its log line.
    return [
        f"train.max_steps={steps}",
        "train.logging_steps=1",
        f"train.eval_steps={steps}",
        f"train.save_steps={steps}",
    ]


def _steady_from_tensorboard(runs_dir: Path) -> dict[str, Any] | None:
    """(wall time, tokens seen) of every logged step, read back from the train stage's TensorBoard files
    (the training's writer and the final evaluation's may be separate files)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    times: dict[int, float] = {}
    tokens: dict[int, float] = {}
    for path in sorted(runs_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        tags = acc.Tags().get("scalars", [])
        if "train/loss" in tags:
            times.update({e.step: e.wall_time for e in acc.Scalars("train/loss")})
        if "train/num_input_tokens_seen" in tags:
            tokens.update({e.step: e.value for e in acc.Scalars("train/num_input_tokens_seen")})
    steps = sorted(set(times) & set(tokens))
    if not steps:
        return None
    return {"steps": steps, "time_s": [times[s] for s in steps], "tokens_seen": [tokens[s] for s in steps]}


def _steady(clock: dict[str, Any] | None) -> dict[str, Any]:
    """Tokens/s and s/step from the first to the last logged step."""
    if not clock or len(clock["steps"]) < 2:
        return {"reason": "fewer than 2 logged steps: no steady window"}
    steps, times, tokens = clock["steps"], clock["time_s"], clock["tokens_seen"]
    window_s = times[-1] - times[0]
    window_tokens = int(tokens[-1] - tokens[0])
    return {
        "window_steps": f"{steps[0] + 1}-{steps[-1]}",
        "window_s": round(window_s, 3),
        "window_trained_tokens": window_tokens,
        "tokens_per_s": round(window_tokens / window_s, 2) if window_s > 0 else None,
        "s_per_step": round(window_s / (steps[-1] - steps[0]), 3),
    }


def _flop_params(base_model_path: str, params_total: int, params_trainable: int) -> dict[str, int]:
    """Frozen and LoRA weights used in matrix multiplies (an untied input embedding is a lookup)."""
    frozen = params_total - params_trainable
    embedding = 0
    cfg_path = Path(base_model_path) / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        text = cfg.get("text_config", cfg)
        if not text.get("tie_word_embeddings", cfg.get("tie_word_embeddings", True)):
            embedding = int(text.get("vocab_size", 0)) * int(text.get("hidden_size", 0))
    return {"n_frozen_matmul": frozen - embedding, "n_lora": params_trainable}


def _mfu(
    tokens_per_s: float | None, params: dict[str, int], peak_flops_per_s: float | None
) -> dict[str, Any]:
    if not tokens_per_s or not peak_flops_per_s:
        return {"model_flops_per_s": None, "mfu": None}
    per_token = 4 * params["n_frozen_matmul"] + 6 * params["n_lora"]
    flops = per_token * tokens_per_s
    return {
        "model_flops_per_token": per_token,
        "model_flops_per_s": round(flops),
        "mfu": round(flops / peak_flops_per_s, 4),
    }


def _run_stage_backend(
    backend: str, config: Path, overrides: list[str], prepared: Path, work: Path, steps: int, timeout_s: float
) -> dict[str, Any]:
    run_dir = work / backend
    _seed_run_dir(prepared, run_dir)
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "train",
        "--config",
        str(config),
        "--run-dir",
        str(run_dir),
        *overrides,
        f"train.backend={backend}",
        *_stage_overrides(steps),
    ]
    log_path = work / f"{backend}.log"
    done = _run_logged(cmd, log_path, timeout_s)
    result: dict[str, Any] = {
        "contestant": backend,
        "path": "python run.py train (trainer/train.py: TRL SFTTrainer)",
        "command": " ".join(cmd[1:]),
        "peak_rss_bytes": done["peak_rss_bytes"],
    }
    record_path = run_dir / "train.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if done["returncode"] != 0 or record.get("status") != "completed":
        why = "timed out" if done["returncode"] is None else f"exit status {done['returncode']}"
        return {
            **result,
            "status": "failed",
            "error": f"{why}: {record.get('error', '')}",
            "log_tail": _tail(log_path),
        }
    res = record["results"]
    params = _flop_params(res["base_model_path"], res["params_total"], res["params_trainable"])
    log_text = _tail(log_path, 10**7)
    return {
        **result,
        "status": "ok",
        "backend": res["backend"],
        "precision": res["precision"],
        # Unsloth's CPU backend picks its own compute dtype and says so in its log.
        "unsloth_log": [
            line.strip() for line in log_text.splitlines() if "Unsloth" in line and "dtype" in line
        ],
        "global_step": res["global_step"],
        "train_loss_first": res["train_loss_first"],
        "train_loss_last": res["train_loss_last"],
        "params_total": res["params_total"],
        "params_trainable": res["params_trainable"],
        **params,
        "steady": _steady(_steady_from_tensorboard(run_dir / "runs")),
        "whole_run": {
            "wall_time_s": res["resources"]["wall_time_s"],
            "trained_tokens": res["resources"]["trained_tokens"],
            "tokens_per_s": res["resources"]["tokens_per_s"],
            "s_per_step": res["resources"]["s_per_step"],
            "method": "train.json: trainer.train() wall time, first step and final evaluation/checkpoint included",
        },
    }


def _run_baseline(
    config: Path, overrides: list[str], prepared: Path, work: Path, steps: int, timeout_s: float
) -> dict[str, Any]:
    run_dir = work / "baseline"
    _seed_run_dir(prepared, run_dir)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.train_speed",
        "--baseline-child",
        str(run_dir),
        "--config",
        str(config),
        "--steps",
        str(steps),
        *[f"--override={o}" for o in overrides],
    ]
    log_path = work / "baseline.log"
    done = _run_logged(cmd, log_path, timeout_s)
    result: dict[str, Any] = {
        "contestant": "baseline",
        "path": "transformers Trainer + PEFT LoRA, fp32, padding=max_length, random batches (this module)",
        "command": " ".join(cmd[1:]),
        "peak_rss_bytes": done["peak_rss_bytes"],
    }
    out_path = run_dir / "baseline.json"
    if done["returncode"] != 0 or not out_path.exists():
        why = "timed out" if done["returncode"] is None else f"exit status {done['returncode']}"
        return {**result, "status": "failed", "error": why, "log_tail": _tail(log_path)}
    child = json.loads(out_path.read_text())
    params = _flop_params(child["base_model_path"], child["params_total"], child["params_trainable"])
    return {
        **result,
        "status": "ok",
        "backend": "plain transformers + PEFT",
        "precision": "fp32",
        "global_step": child["global_step"],
        "train_loss_first": child["train_loss_first"],
        "train_loss_last": child["train_loss_last"],
        "params_total": child["params_total"],
        "params_trainable": child["params_trainable"],
        **params,
        "padded_tokens_per_step": child["padded_tokens_per_step"],
        "steady": _steady(child["clock"]),
        "whole_run": {
            "wall_time_s": child["wall_time_s"],
            "trained_tokens": child["trained_tokens"],
            "tokens_per_s": round(child["trained_tokens"] / child["wall_time_s"], 2),
            "s_per_step": round(child["wall_time_s"] / max(1, child["global_step"]), 3),
            "method": "trainer.train() wall time, first step included (no evaluation or checkpoint)",
        },
    }


def matmul_peak(n: int = 1024, repeats: int = 20) -> dict[str, Any]:
    """This machine's fp32 matmul rate with torch (all of torch's threads, as training uses)."""
    import torch

    a = torch.randn(n, n, dtype=torch.float32)
    b = torch.randn(n, n, dtype=torch.float32)
    a @ b  # warm-up: thread pool start
    best = best_of(lambda: a @ b, repeats)
    return {
        "peak_flops_per_s": round(2 * n**3 / best),
        "method": f"torch float32 matmul {n}x{n}, best of {repeats}, {torch.get_num_threads()} threads",
        "threads": torch.get_num_threads(),
    }


def _load() -> dict[str, Any]:
    import psutil

    return {
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "busy_cores": round(psutil.cpu_percent(interval=1.0) / 100 * (os.cpu_count() or 1), 2),
    }


def run_benchmark(
    config: Path,
    steps: int,
    contestants: list[str],
    work_dir: Path | None = None,
    overrides: list[str] | None = None,
    timeout_s: float = 3600,
    matmul_n: int = 1024,
    progress: Any = print,
) -> dict[str, Any]:
    from trainer.config import load_config

    overrides = list(overrides or [])
    cfg = load_config(config, overrides)  # a bad config fails here, before anything runs
    t = cfg.train
    keep = work_dir is not None
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="train-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        load_before = _load()
        progress(f"load before: {load_before}")
        peak = matmul_peak(matmul_n)
        progress(f"matmul peak: {peak['peak_flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['method']})")
        progress("prepare: one shared data folder")
        prepared = _prepare(config, overrides, work, timeout_s)
        results = []
        for name in contestants:
            progress(f"{name}: training {steps} steps ...")
            t0 = time.perf_counter()
            if name == "baseline":
                one = _run_baseline(config, overrides, prepared, work, steps, timeout_s)
            else:
                one = _run_stage_backend(name, config, overrides, prepared, work, steps, timeout_s)
            one["process_wall_s"] = round(time.perf_counter() - t0, 1)
            progress(f"{name}: {one['status']} in {one['process_wall_s']} s")
            results.append(one)
        load_after = _load()
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    base = next((r for r in results if r["contestant"] == "baseline" and r["status"] == "ok"), None)
    base_tps = base["steady"].get("tokens_per_s") if base else None
    for r in results:
        if r["status"] != "ok":
            continue
        tps = r["steady"].get("tokens_per_s")
        r["speedup_vs_baseline"] = round(tps / base_tps, 3) if tps and base_tps else None
        r.update(_mfu(tps, r, peak["peak_flops_per_s"]))
    return {
        "benchmark": "train_speed",
        "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.train_speed " + " ".join(sys.argv[1:]),
        "environment": environment(),
        "settings": {
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
        },
        "machine_load": {"before": load_before, "after": load_after},
        "matmul_peak": peak,
        "flops_method": FLOPS_METHOD,
        "timing_method": "steady window: from the log of step 1 to the log of the last step (train stage: "
        "TensorBoard wall times; baseline: a callback at the same point); tokens = non-padding input tokens "
        "(Trainer include_num_input_tokens_seen='non_padding')",
        "rss_method": "psutil RSS of the contestant's process tree, every 100 ms (model load and evaluation included)",
        "work_dir": str(work) if keep else None,
        "results": results,
    }


# --- the baseline child: plain transformers Trainer + PEFT --------------------------------------


def _baseline_rows(run_dir: Path, tokenizer: Any, max_length: int) -> list[dict[str, list[int]]]:
    """The prepared records tokenized as the train stage does (trainer.train.tokenize_conversation:
    EOS appended, loss on the answers only), truncated at max_length, then padded to max_length."""
    from trainer import prompt_format
    from trainer.runfolder import read_jsonl
    from trainer.train import tokenize_conversation

    fmt = prompt_format.load(run_dir)
    pad = tokenizer.pad_token_id
    rows = []
    for rec in read_jsonl(run_dir / "data" / "train.jsonl"):
        tokens = tokenize_conversation(tokenizer, fmt.record_segments(rec))
        ids, labels = tokens["input_ids"][:max_length], tokens["labels"][:max_length]
        fill = max_length - len(ids)
        rows.append(
            {
                "input_ids": ids + [pad] * fill,
                "attention_mask": [1] * len(ids) + [0] * fill,
                "labels": labels + [-100] * fill,
            }
        )
    return rows


def baseline_child(run_dir: Path, config: Path, steps: int, overrides: list[str]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    from trainer.config import load_config
    from trainer.models import load_tokenizer, resolve_base_model
    from trainer.train import lora_config, optimizer_args

    assert "unsloth" not in sys.modules, "the baseline must run without Unsloth's patches"
    cfg = load_config(config, [*overrides, *_stage_overrides(steps)])
    t = cfg.train
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    model_ref = resolve_base_model(cfg)
    tokenizer = load_tokenizer(model_ref, cfg.model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_ds = Dataset.from_list(_baseline_rows(run_dir, tokenizer, cfg.data.max_length))
    model = AutoModelForCausalLM.from_pretrained(model_ref, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, lora_config(cfg))
    params_total = sum(p.numel() for p in model.parameters())
    params_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    clock: dict[str, list[Any]] = {"steps": [], "time_s": [], "tokens_seen": []}
    losses: list[float] = []

    class StepClock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                clock["steps"].append(state.global_step)
                clock["time_s"].append(time.time())
                clock["tokens_seen"].append(int(state.num_input_tokens_seen))
                losses.append(float(logs["loss"]))

    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=steps,
        **optimizer_args(t),
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        data_collator=default_data_collator,
        callbacks=[StepClock()],
    )
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    return {
        "base_model_path": model_ref,
        "params_total": params_total,
        "params_trainable": params_trainable,
        "global_step": trainer.state.global_step,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "trained_tokens": int(trainer.state.num_input_tokens_seen),
        "padded_tokens_per_step": t.per_device_batch_size
        * t.gradient_accumulation_steps
        * cfg.data.max_length,
        "wall_time_s": round(wall, 3),
        "clock": clock,
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
        help=f"comma-separated contestants from {', '.join(CONTESTANTS)} (default: all three)",
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
        )
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    peak = report["matmul_peak"]
    console.print(f"fp32 matmul peak {peak['peak_flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['method']})")
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
