"""Training stage: `python run.py train` — LoRA/QLoRA with TRL's SFTTrainer, Unsloth or PEFT backend.

Reads `data/train.jsonl`, `data/val.jsonl` and `prompt_format.json` from the run folder (written by
`prepare`). Writes `adapter/` (LoRA weights, tokenizer, prompt format), `checkpoints/` (every
`train.save_steps`, the last `save_total_limit` kept, plus the best by eval loss),
`logs/metrics.jsonl` (every logged step), `logs/training.log`, TensorBoard files under `runs/`,
and returns what goes into `train.json` (backend and precision with the reasons they were chosen,
losses, checkpoints, resources).

`run` reads top to bottom: `_setup` (backend, precision, model with LoRA, tokenized splits; see
trainer/backends.py), `_fit` (the TRL trainer with the recipe of trainer/recipe.py), `_save_adapter`,
`_summarize` (the `train.json` results).

A killed training resumes from the newest complete checkpoint on the next `train`/`all`
(optimizer, scheduler, RNG and data position are restored by the Trainer); `--force` starts over.

Data-parallel on several processes (DDP; gloo on CPU, NCCL on GPUs):
`accelerate launch --config_file configs/accelerate/ddp_cpu.yaml run.py train --config ...`. Every
process trains on its share of each batch; only the main process writes files (adapter, logs,
checkpoints, `train.json`), and it alone decides which checkpoint to resume from.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import callbacks, prompt_format
from trainer.backends import LOADERS, backend_reason, choose_backend, choose_precision, quantization
from trainer.config import PipelineConfig, config_fingerprint
from trainer.errors import UserError
from trainer.models import resolve_base_model
from trainer.processes import is_main_process
from trainer.recipe import optimizer_args, sft_trainer_class, tokenize_conversation
from trainer.results import (
    BackendChoice,
    Checkpoint,
    Hyperparameters,
    LoraSettings,
    NotMeasured,
    Reason,
    TrainFiles,
    TrainResources,
    TrainResult,
    TrainTimeBudget,
    Utilisation,
    note,
    or_not_measured,
)
from trainer.runfolder import RunDir, atomic_dir, cpu_model, dir_bytes, read_jsonl, write_text
from trainer.utilisation import FLOPS_METHOD, flop_params, matmul_peak, model_flops_per_token

log = logging.getLogger("trainer.train")
CHECKPOINTS = "checkpoints"
FINGERPRINT_FILE = "FINGERPRINT"


@dataclass
class _Setup:
    """What `_setup` chose and loaded for one training run."""

    backend: str
    backend_reason: str
    backend_choice: BackendChoice
    precision: str
    precision_reason: str
    precision_code: Reason
    four_bit: bool
    quant_reason: str
    quant_code: Reason
    model_ref: str
    fmt: prompt_format.PromptFormat
    model: Any
    tokenizer: Any
    train_ds: Any
    val_ds: Any
    main: bool  # the only process that writes files in a multi-process launch


def run(cfg: PipelineConfig, run_dir: RunDir) -> TrainResult:
    """Train the LoRA adapter; returns the results that go into `train.json`."""
    setup = _setup(cfg, run_dir)
    params_total = sum(p.numel() for p in setup.model.parameters())
    params_trainable = sum(p.numel() for p in setup.model.parameters() if p.requires_grad)
    fit = _fit(cfg, run_dir, setup)
    _save_adapter(run_dir, setup, fit.trainer)
    if not setup.main:
        return TrainResult(global_step=fit.trainer.state.global_step)  # train.json is the main process's
    return _summarize(cfg, run_dir, setup, fit, params_total, params_trainable)


def _setup(cfg: PipelineConfig, run_dir: RunDir) -> _Setup:
    """Choose backend, precision and quantization; load the model with LoRA and the tokenized splits."""
    choice = choose_backend(cfg, run_dir)  # Unsloth first: it patches trl/transformers
    backend = str(choice.backend)
    import torch

    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    main = is_main_process()
    if not (run_dir / prompt_format.FILE_NAME).exists():
        raise UserError(
            f"{run_dir / prompt_format.FILE_NAME} is missing.", fix="run `python run.py prepare` first"
        )
    fmt = prompt_format.load(run_dir)
    precision, precision_reason, precision_code = choose_precision(cfg.train.precision)
    four_bit, quant_reason, quant_code = quantization(cfg)
    model_ref = resolve_base_model(cfg)
    log.info(
        "backend=%s (%s); precision=%s (%s); %s",
        backend,
        backend_reason(choice),
        precision,
        precision_reason,
        quant_reason,
    )
    model, tokenizer = LOADERS[backend](cfg, model_ref, precision, four_bit)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_ds, val_ds = (_load_split(run_dir, s, fmt, tokenizer) for s in ("train", "val"))
    return _Setup(
        backend=backend,
        backend_reason=backend_reason(choice),
        backend_choice=choice,
        precision=precision,
        precision_reason=precision_reason,
        precision_code=precision_code,
        four_bit=four_bit,
        quant_reason=quant_reason,
        quant_code=quant_code,
        model_ref=model_ref,
        fmt=fmt,
        model=model,
        tokenizer=tokenizer,
        train_ds=train_ds,
        val_ds=val_ds,
        main=main,
    )


def _sft_config(cfg: PipelineConfig, run_dir: RunDir, precision: str) -> Any:
    """TRL's SFTConfig: the recipe's optimizer arguments plus this stage's logging, evaluation and
    checkpoint schedule."""
    import torch
    from trl import SFTConfig

    t = cfg.train
    eval_steps = max(1, t.eval_steps)
    save_steps = max(1, t.save_steps)
    if save_steps % eval_steps:
        save_steps = eval_steps * max(1, round(save_steps / eval_steps))  # best-model tracking needs it
    return SFTConfig(
        output_dir=str(run_dir / CHECKPOINTS),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_eval_batch_size=t.per_device_batch_size,
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        **optimizer_args(t),
        logging_steps=t.logging_steps,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        report_to=["tensorboard"],
        max_length=cfg.data.max_length,
        gradient_checkpointing=t.gradient_checkpointing,  # TRL's default is on: recomputes every forward
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,  # the stage's progress line (trainer/console.py) replaces tqdm and its prints
        save_only_model=False,
        ddp_find_unused_parameters=False,  # multi-process: every LoRA weight is used in each forward
    )


def _probe_cost_s(setup: _Setup) -> float:
    cost = setup.backend_choice.probe.cost_s
    return float(cost) if isinstance(cost, (int, float)) else 0.0


def _budget_minutes(cfg: PipelineConfig, setup: _Setup) -> float:
    """train.max_minutes less what this run spent probing the backends (0 stays: no budget)."""
    budget, cost = cfg.train.max_minutes, _probe_cost_s(setup)
    if budget <= 0 or cost <= 0:
        return budget
    return max(budget * 0.05, budget - cost / 60)  # still a budget (0 would mean none)


@dataclass
class _Fit:
    """The finished trainer and what training measured."""

    trainer: Any
    resume: Path | None
    resume_step: int
    wall_s: float
    eval_metrics: dict[str, Any]
    time_budget: TrainTimeBudget


def _fit(cfg: PipelineConfig, run_dir: RunDir, setup: _Setup) -> _Fit:
    """Train (resuming from the newest complete checkpoint of this config), then evaluate once."""
    import torch

    args = _sft_config(cfg, run_dir, setup.precision)
    # SFTConfig has set up the process group of a multi-process launch: now ranks can agree.
    fingerprint = _config_fingerprint(cfg, run_dir)
    resume = _resume_point(run_dir / CHECKPOINTS, fingerprint, setup.main, args.world_size)
    resume_step = int(resume.name.split("-")[-1]) if resume else 0
    if resume:
        log.info("resuming from %s", resume)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "runs")
    budget = callbacks.TimeBudget(_budget_minutes(cfg, setup))
    trainer = sft_trainer_class(setup.backend)(
        model=setup.model,
        args=args,
        train_dataset=setup.train_ds,
        eval_dataset=setup.val_ds,
        processing_class=setup.tokenizer,
        callbacks=callbacks.make(run_dir, resume_step, setup.main, budget),
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its dict prints: the progress line and the log have them
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.OutOfMemoryError:
        raise UserError(
            "out of memory during training.",
            fix="lower train.per_device_batch_size (raise train.gradient_accumulation_steps to keep the "
            "effective batch), lower data.max_length, set train.gradient_checkpointing=true, or "
            "model.load_in_4bit=true on a GPU",
        ) from None
    wall_s = time.perf_counter() - t0
    return _Fit(trainer, resume, resume_step, wall_s, trainer.evaluate(), budget.record(trainer.state))


def _save_adapter(run_dir: RunDir, setup: _Setup, trainer: Any) -> None:
    """Save step: `adapter/` (LoRA weights, tokenizer, prompt format, base model path), written by
    the main process under a temporary name and renamed when complete."""
    if setup.main:
        with atomic_dir(run_dir / "adapter") as tmp:
            trainer.model.save_pretrained(tmp, safe_serialization=True)
            setup.tokenizer.save_pretrained(tmp)
            prompt_format.save(setup.fmt, tmp / prompt_format.FILE_NAME)
            (tmp / "base_model.txt").write_text(setup.model_ref + "\n")
    trainer.accelerator.wait_for_everyone()  # no process returns before the adapter is written


def _checkpoint_records(
    run_dir: RunDir, losses: list[dict[str, Any]], evals: list[dict[str, Any]], state: Any
) -> tuple[list[Checkpoint], Checkpoint | NotMeasured]:
    """(every complete checkpoint with its losses, the best one by eval loss: null when none)."""
    checkpoints = []
    for path in _complete_checkpoints(run_dir / CHECKPOINTS):
        step = int(path.name.split("-")[-1])
        checkpoints.append(
            Checkpoint(
                step=step,
                train_loss=or_not_measured(
                    next((r["loss"] for r in reversed(losses) if r["step"] <= step), None)
                ),
                eval_loss=or_not_measured(next((r["eval_loss"] for r in evals if r["step"] == step), None)),
                path=str(path.relative_to(run_dir.path)),
            )
        )
    best: Checkpoint | NotMeasured = NotMeasured()
    if state.best_model_checkpoint:
        best_step = int(Path(state.best_model_checkpoint).name.split("-")[-1])
        best = Checkpoint(
            step=best_step,
            eval_loss=or_not_measured(state.best_metric),
            path=str(Path(state.best_model_checkpoint).relative_to(run_dir.path)),
        )
    return checkpoints, best


def _resources(run_dir: RunDir, fit: _Fit) -> TrainResources:
    """Wall time, throughput, peak memory and disk of this training run."""
    import torch

    state = fit.trainer.state
    trained_tokens = int(state.num_input_tokens_seen or 0)
    steps_this_run = max(1, state.global_step - fit.resume_step)
    wall = fit.wall_s
    cuda = torch.cuda.is_available()
    no_gpu = NotMeasured("no CUDA GPU on this machine")  # written once, as `gpu_reason`
    return TrainResources(
        wall_time_s=round(wall, 2),
        trained_tokens=trained_tokens,
        tokens_per_s=round(trained_tokens * (steps_this_run / max(1, state.global_step)) / wall, 2),
        s_per_step=round(wall / steps_this_run, 3),
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        peak_gpu_reserved_bytes=torch.cuda.max_memory_reserved() if cuda else no_gpu,
        peak_gpu_allocated_bytes=torch.cuda.max_memory_allocated() if cuda else no_gpu,
        gpu_reason=NotMeasured() if cuda else no_gpu.why,  # null when there is a GPU
        gpu_name=torch.cuda.get_device_name(0) if cuda else no_gpu,
        cpu_model=cpu_model(),
        disk_bytes=dir_bytes(run_dir / "adapter") + dir_bytes(run_dir / CHECKPOINTS),
    )


def _utilisation(
    setup: _Setup, resources: TrainResources, params_total: int, params_trainable: int
) -> Utilisation | NotMeasured:
    """Achieved model FLOP/s (FLOPs per trained token x tokens/s of the whole training) against
    this machine's matmul peak in the training dtype, measured now (a second or two)."""
    tps = resources.tokens_per_s
    if not isinstance(tps, (int, float)) or tps <= 0:
        return NotMeasured("no_tokens_per_s")  # codes: the report words them
    if setup.four_bit:
        return NotMeasured("four_bit")  # the dequantized compute's peak is not measured
    per_token = model_flops_per_token(flop_params(setup.model_ref, params_total, params_trainable))
    peak = matmul_peak(setup.precision)
    achieved = per_token * tps
    return Utilisation(
        model_flops_per_token=per_token,
        achieved_flops_per_s=round(achieved),
        peak_flops_per_s=peak["peak_flops_per_s"],
        peak_dtype=setup.precision,
        peak_method=peak["method"],
        utilisation=round(achieved / peak["peak_flops_per_s"], 4),
        flops_method=FLOPS_METHOD + "; tokens/s of the whole trainer.train() call (first step, "
        "evaluations and checkpoints included)",
    )


def _notes(cfg: PipelineConfig, setup: _Setup, fit: _Fit, world: int) -> tuple[list[str], list[Reason]]:
    """train.json `notes` (English) and `note_codes` (the same notes as codes, for the report)."""
    notes: list[str] = []
    codes: list[Reason] = []
    if setup.backend_choice.reason in ("unsloth_unavailable", "probe_other_failed", "probe_failed"):
        note(
            notes,
            codes,
            "backend_fallback",
            setup.backend_reason,
            backend=setup.backend,
            text=setup.backend_reason,
        )
    if cfg.model.load_in_4bit and not setup.four_bit:
        notes.append(setup.quant_reason)
        codes.append(setup.quant_code)
    if setup.precision_reason.startswith("train.precision=") and setup.precision != cfg.train.precision:
        notes.append(setup.precision_reason)
        codes.append(setup.precision_code)
    if cfg.train.max_minutes > 0 and _probe_cost_s(setup) > 0:
        note(
            notes,
            codes,
            "probe_cost",
            f"the backend probe took {_probe_cost_s(setup):.0f} s of train.max_minutes={cfg.train.max_minutes:g}",
            seconds=round(_probe_cost_s(setup)),
            max_minutes=cfg.train.max_minutes,
        )
    if fit.resume:
        note(notes, codes, "resumed", f"resumed from {fit.resume.name}", checkpoint=fit.resume.name)
    if fit.time_budget.stopped_early is True:
        note(
            notes,
            codes,
            "time_budget_stop",
            f"stopped by train.max_minutes={cfg.train.max_minutes:g} after step "
            f"{fit.time_budget.stopped_at_step} of {fit.time_budget.planned_steps}",
            max_minutes=cfg.train.max_minutes,
            step=fit.time_budget.stopped_at_step,
            planned_steps=fit.time_budget.planned_steps,
        )
    if world > 1:
        note(
            notes,
            codes,
            "data_parallel",
            f"data-parallel on {world} processes: tokens/s counts all of them, peak RSS is the main process's",
            processes=world,
        )
    return notes, codes


def _summarize(
    cfg: PipelineConfig, run_dir: RunDir, setup: _Setup, fit: _Fit, params_total: int, params_trainable: int
) -> TrainResult:
    """The results for `train.json`, from the trainer's state and `logs/metrics.jsonl`."""
    import torch

    t = cfg.train
    state = fit.trainer.state
    world = fit.trainer.args.world_size
    history = read_jsonl(run_dir / "logs" / "metrics.jsonl")
    losses = [r for r in history if "loss" in r]
    evals = [r for r in history if "eval_loss" in r]
    checkpoints, best = _checkpoint_records(run_dir, losses, evals, state)
    resources = _resources(run_dir, fit)
    util = _utilisation(setup, resources, params_total, params_trainable)
    cuda = torch.cuda.is_available()
    notes, note_codes = _notes(cfg, setup, fit, world)
    return TrainResult(
        backend=setup.backend,
        backend_reason=setup.backend_reason,
        backend_choice=setup.backend_choice,
        precision=setup.precision,
        precision_reason=setup.precision_reason,
        precision_code=setup.precision_code,
        device=torch.cuda.get_device_name(0) if cuda else f"CPU ({cpu_model()})",
        quantization="4-bit NF4" if setup.four_bit else "none",
        quantization_reason=setup.quant_reason,
        quantization_code=setup.quant_code,
        base_model=cfg.model.name,
        base_model_path=setup.model_ref,
        params_total=params_total,
        params_trainable=params_trainable,
        lora=LoraSettings(
            r=t.lora_r, alpha=t.lora_alpha, dropout=t.lora_dropout, target_modules=t.target_modules
        ),
        hyperparameters=Hyperparameters(
            epochs=t.epochs,
            max_steps=t.max_steps,
            per_device_batch_size=t.per_device_batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            effective_batch_size=t.per_device_batch_size * t.gradient_accumulation_steps * world,
            learning_rate=t.learning_rate,
            warmup_steps=t.warmup_steps,
            lr_scheduler=t.lr_scheduler,
            optimizer=t.optimizer,
            max_length=cfg.data.max_length,
            world_size=world,
            seed=t.seed,
        ),
        global_step=state.global_step,
        train_loss_first=losses[0]["loss"] if losses else NotMeasured(),
        train_loss_last=losses[-1]["loss"] if losses else NotMeasured(),
        eval_loss_first=evals[0]["eval_loss"] if evals else NotMeasured(),
        eval_loss_last=or_not_measured(fit.eval_metrics.get("eval_loss")),
        checkpoints=checkpoints,
        best_checkpoint=best,
        # null: trained from scratch
        resumed_from=str(fit.resume.relative_to(run_dir.path)) if fit.resume else NotMeasured(),
        resources=resources,
        utilisation=util,
        utilisation_reason=util.why if isinstance(util, NotMeasured) else NotMeasured(absent=True),
        time_budget=fit.time_budget,
        files=TrainFiles(
            adapter="adapter", metrics="logs/metrics.jsonl", log="logs/training.log", tensorboard="runs"
        ),
        headline=f"{setup.backend}/{setup.precision}, {state.global_step} steps, loss "
        f"{losses[0]['loss'] if losses else float('nan'):.3f} -> {losses[-1]['loss'] if losses else float('nan'):.3f}, "
        f"{resources.tokens_per_s:.0f} tok/s",
        notes=notes,
        note_codes=note_codes,
    )


def _complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoints that were fully written (a kill mid-save leaves one without its state files)."""
    found = []
    for path in ckpt_dir.glob("checkpoint-*"):
        needed = ["trainer_state.json", "optimizer.pt", "scheduler.pt"]
        if all((path / n).exists() for n in needed) and any(path.glob("adapter_model.*")):
            found.append(path)
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def reset(run_dir: RunDir) -> None:
    """--force: forget checkpoints so training starts over."""
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)


def _config_fingerprint(cfg: PipelineConfig, run_dir: RunDir) -> str:
    """What checkpoints are kept by: the fingerprint the runner recorded in train.json when it
    started this stage (the config sections that decide training, `stages.py`). Called on its own,
    without the runner, the whole config decides."""
    record = run_dir.stage_result("train") or {}
    recorded = record.get("config_fingerprint") if record.get("status") == "running" else None
    return str(recorded) if recorded else config_fingerprint(cfg, list(cfg.to_dict()))


def _resume_point(ckpt_dir: Path, fingerprint: str, main: bool, world_size: int) -> Path | None:
    """The newest complete checkpoint of this config, or None.

    The main process decides: it drops checkpoints of another config and looks for the newest one.
    In a multi-process launch the others receive its answer (a collective, so it is also a barrier)
    and never list or delete checkpoints themselves, which could race with the main process.
    """
    newest = None
    if main:
        fp_file = ckpt_dir / FINGERPRINT_FILE
        if ckpt_dir.exists() and (not fp_file.exists() or fp_file.read_text().strip() != fingerprint):
            shutil.rmtree(ckpt_dir)  # checkpoints of another config cannot be resumed
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_text(fp_file, fingerprint)
        complete = _complete_checkpoints(ckpt_dir)
        newest = complete[-1].name if complete else None
    if world_size > 1:
        from accelerate.utils import broadcast_object_list

        newest = broadcast_object_list([newest], from_process=0)[0]
    return ckpt_dir / newest if newest else None


def _load_split(run_dir: RunDir, split: str, fmt: prompt_format.PromptFormat, tokenizer: Any) -> Any:
    """A prepared split, tokenized with the loss on the answers only (every answer of a multi-turn
    record)."""
    from datasets import Dataset

    path = run_dir / "data" / f"{split}.jsonl"
    if not path.exists():
        raise UserError(f"{path} is missing.", fix="run `python run.py prepare` first")
    rows = read_jsonl(path)
    if not rows:
        # An empty val split would end in a traceback inside the first evaluation (TRL).
        what = "to train on" if split == "train" else "to validate on (training evaluates every eval_steps)"
        raise UserError(
            f"{path} has no records: nothing {what}.",
            fix="use more data, or set data.val_size to at least 1 (a count) or a larger share, "
            "then rerun `python run.py prepare --force`",
        )
    return Dataset.from_list([tokenize_conversation(tokenizer, fmt.record_segments(r)) for r in rows])
