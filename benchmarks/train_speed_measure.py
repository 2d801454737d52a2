"""What `python -m benchmarks.train_speed` measures: the steady-step window, model FLOPs per token,
MFU against this machine's fp32 matmul peak, and the machine's load around the run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainer import utilisation
from trainer.utilisation import FLOPS_METHOD, flop_params, model_flops_per_token

__all__ = ["FLOPS_METHOD", "flop_params"]


def steady_from_tensorboard(runs_dir: Path) -> dict[str, Any] | None:
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


def steady_window(clock: dict[str, Any] | None) -> dict[str, Any]:
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


def mfu(tokens_per_s: float | None, params: dict[str, int], peak_flops_per_s: float | None) -> dict[str, Any]:
    """Model FLOPs per token and per second, and their share of the measured peak (None without a rate)."""
    if not tokens_per_s or not peak_flops_per_s:
        return {"model_flops_per_s": None, "mfu": None}
    per_token = model_flops_per_token(params)
    flops = per_token * tokens_per_s
    return {
        "model_flops_per_token": per_token,
        "model_flops_per_s": round(flops),
        "mfu": round(flops / peak_flops_per_s, 4),
    }


def matmul_peak(n: int = 1024, repeats: int = 20, dtype: str = "fp32") -> dict[str, Any]:
    """This machine's matmul rate in `dtype` (trainer/utilisation.py, also the train stage's peak)."""
    return utilisation.matmul_peak(dtype, n, repeats)


def machine_load() -> dict[str, Any]:
    """Load average and busy cores now: other work on the machine slows every contestant."""
    import psutil

    return {
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "busy_cores": round(psutil.cpu_percent(interval=1.0) / 100 * (os.cpu_count() or 1), 2),
    }


def timing_overrides(steps: int) -> list[str]:
    """Config overrides of every contestant: log every step (the clock), evaluate and checkpoint only
    at the last step, after its log line, so both stay outside the steady window."""
    return [
        f"train.max_steps={steps}",
        "train.logging_steps=1",
        f"train.eval_steps={steps}",
        f"train.save_steps={steps}",
    ]
