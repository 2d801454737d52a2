"""How `python -m benchmarks.train_speed` runs each contestant in its own process and reads its numbers back.

- `prepare_once`: one `python run.py prepare` whose splits every contestant copies;
- `run_stage_backend`: the toolkit's train stage (`python run.py train`, train.backend=unsloth|peft),
  read back from its `train.json`, log and TensorBoard files;
- `run_baseline`: the plain transformers baseline (benchmarks/train_speed_baseline.py), read back
  from its `baseline.json`.
Each process's output goes to a log file in the work folder; its tree's peak RSS is sampled.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.train_speed_measure import (
    flop_params,
    steady_from_tensorboard,
    steady_window,
    timing_overrides,
)
from trainer.errors import UserError
from trainer.runfolder import ROOT


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_logged(
    cmd: list[str], log_path: Path, timeout_s: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a child process with its output in `log_path`, sampling its tree's peak RSS."""
    from benchmarks.memory import PeakSampler

    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**_child_env(), **(env or {})}, cwd=ROOT
        )
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


def prepare_once(config: Path, overrides: list[str], work: Path, timeout_s: float) -> Path:
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


def run_stage_backend(
    backend: str, config: Path, overrides: list[str], prepared: Path, work: Path, steps: int, timeout_s: float
) -> dict[str, Any]:
    """One backend of the train stage in a fresh process: its result row (status, losses, steady window)."""
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
        *timing_overrides(steps),
    ]
    log_path = work / f"{backend}.log"
    # auto probes both backends afresh (its own cache folder): its cost is part of the result
    env = {"FT_BACKEND_PROBE_CACHE": str(work / "probe-cache")} if backend == "auto" else {}
    done = _run_logged(cmd, log_path, timeout_s, env)
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
    params = flop_params(res["base_model_path"], res["params_total"], res["params_trainable"])
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
        "backend_choice": _choice_summary(res.get("backend_choice")),
        "train_loss_first": res["train_loss_first"],
        "train_loss_last": res["train_loss_last"],
        "params_total": res["params_total"],
        "params_trainable": res["params_trainable"],
        **params,
        "steady": steady_window(steady_from_tensorboard(run_dir / "runs")),
        "whole_run": {
            "wall_time_s": res["resources"]["wall_time_s"],
            "trained_tokens": res["resources"]["trained_tokens"],
            "tokens_per_s": res["resources"]["tokens_per_s"],
            "s_per_step": res["resources"]["s_per_step"],
            "method": "train.json: trainer.train() wall time, first step and final evaluation/checkpoint included",
        },
    }


def _choice_summary(choice: dict[str, Any] | None) -> dict[str, Any] | None:
    """The backend choice of a train.json, with the probe's tokens/s per backend and its cost."""
    if not choice:
        return None
    probe = choice.get("probe") or {}
    return {
        "backend": choice.get("backend"),
        "reason": choice.get("reason"),
        "probe_tokens_per_s": {r["backend"]: r.get("tokens_per_s") for r in probe.get("runs", [])},
        "probe_cost_s": probe.get("cost_s"),
        "probe_cached": probe.get("cached"),
    }


def run_baseline(
    config: Path, overrides: list[str], prepared: Path, work: Path, steps: int, timeout_s: float
) -> dict[str, Any]:
    """The plain transformers baseline in a fresh process: its result row, shaped like a backend's."""
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
    params = flop_params(child["base_model_path"], child["params_total"], child["params_trainable"])
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
        "steady": steady_window(child["clock"]),
        "whole_run": {
            "wall_time_s": child["wall_time_s"],
            "trained_tokens": child["trained_tokens"],
            "tokens_per_s": round(child["trained_tokens"] / child["wall_time_s"], 2),
            "s_per_step": round(child["wall_time_s"] / max(1, child["global_step"]), 3),
            "method": "trainer.train() wall time, first step included (no evaluation or checkpoint)",
        },
    }
