"""Callbacks of the train stage (trainer/train.py): the metrics log, the time budget and the
stage's progress line (trainer/console.py).

`logs/metrics.jsonl` gets one line per logged step (loss, learning rate, grad norm, tokens seen) and
per evaluation; on resume the lines after the checkpoint are dropped so none is duplicated or lost.
`train.max_minutes` stops training after the optimizer step that uses the budget up.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from trainer import console
from trainer.results import NotMeasured, TrainTimeBudget
from trainer.runfolder import RunDir, read_jsonl, write_text

log = logging.getLogger("trainer.train")


class TimeBudget:
    """Stops training after the optimizer step that uses up `train.max_minutes` (0: never).

    All processes of a data-parallel run stop at the same step: the decision of the slowest clock
    is shared, or one rank would wait forever for the others at the next gradient sync.
    """

    def __init__(self, max_minutes: float) -> None:
        self.max_s = max_minutes * 60
        self.start = time.perf_counter()
        self.stopped_at: int | None = None

    def begin(self) -> None:
        self.start = time.perf_counter()

    def step_end(self, state: Any, control: Any) -> None:
        """After each optimizer step: stop (and checkpoint) once the budget is used up."""
        if self.max_s <= 0 or control.should_training_stop:
            return
        over = time.perf_counter() - self.start >= self.max_s
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            import torch

            flag = torch.tensor([int(over)], device="cuda" if torch.cuda.is_available() else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = bool(flag.item())
        if over:
            self.stopped_at = state.global_step
            control.should_training_stop = True
            control.should_save = True  # the stopping step becomes a resume point

    def record(self, state: Any) -> TrainTimeBudget:
        """`time_budget` in train.json: the limit, whether it stopped training, and where."""
        return TrainTimeBudget(
            max_minutes=self.max_s / 60 if self.max_s > 0 else NotMeasured(),
            stopped_early=self.stopped_at is not None,
            stopped_at_step=NotMeasured() if self.stopped_at is None else self.stopped_at,
            planned_steps=state.max_steps,
        )


def make(run_dir: RunDir, resume_step: int, main: bool, budget: TimeBudget) -> list[Any]:
    """The train stage's transformers callbacks: metrics log (main process) and time budget."""
    from transformers import TrainerCallback

    metrics_path = run_dir / "logs" / "metrics.jsonl"
    if main:
        # On resume, keep the log lines up to the checkpoint and drop those of the lost steps.
        kept = (
            [r for r in read_jsonl(metrics_path) if r.get("step", 0) <= resume_step]
            if metrics_path.exists()
            else []
        )
        write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    class MetricsLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0, 4)}
            if "loss" in logs:
                row.update(
                    loss=logs["loss"],
                    learning_rate=logs.get("learning_rate"),
                    grad_norm=logs.get("grad_norm"),
                    tokens_seen=logs.get("num_input_tokens_seen", state.num_input_tokens_seen),
                )
            elif "eval_loss" in logs:
                row["eval_loss"] = logs["eval_loss"]
            else:
                return
            with open(metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            log.info("step %s %s", state.global_step, {k: v for k, v in row.items() if k != "step"})

    class StopOnBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            budget.begin()

        def on_step_end(self, args, state, control, **kwargs):
            budget.step_end(state, control)

    return [MetricsLog(), StopOnBudget(), *([_progress_callback()] if main else [])]


class _Speed:
    """Trained (non-padding) tokens per second since training (re)started."""

    def __init__(self) -> None:
        self.start: tuple[float, int] | None = None

    def update(self, tokens_seen: int) -> float | None:
        now = time.perf_counter()
        if self.start is None:
            self.start = (now, tokens_seen)
            return None
        t0, seen0 = self.start
        return (tokens_seen - seen0) / (now - t0) if now > t0 and tokens_seen > seen0 else None


def _progress_callback() -> Any:
    from transformers import TrainerCallback

    class ProgressLine(TrainerCallback):
        """The train stage's progress line: steps of the run, last loss, validation loss, tokens/s."""

        def __init__(self) -> None:
            self.speed = _Speed()
            self.parts: dict[str, str] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            console.line().total(state.max_steps, state.global_step)
            self.speed.update(state.num_input_tokens_seen)

        def on_step_end(self, args, state, control, **kwargs):
            console.line().advance()
            rate = self.speed.update(state.num_input_tokens_seen)
            if rate is not None:
                self.parts["speed"] = f"{rate:,.0f} tokens/s"
                self._show()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.parts["loss"] = f"loss {float(logs['loss']):.3f}"
            if logs and "eval_loss" in logs:
                self.parts["val"] = f"val {float(logs['eval_loss']):.3f}"
            self._show()

        def _show(self) -> None:
            order = ("loss", "val", "speed")
            console.line().status(" · ".join(self.parts[k] for k in order if k in self.parts))

    return ProgressLine()
