"""Training stage: `python run.py train` — LoRA/QLoRA with TRL's SFTTrainer, Unsloth or PEFT backend.

Reads `data/train.jsonl`, `data/val.jsonl` and `prompt_format.json` from the run folder (written by
`prepare`). Writes `adapter/` (LoRA weights, tokenizer, prompt format), `checkpoints/` (every
`train.save_steps`, the last `save_total_limit` kept, plus the best by eval loss),
`logs/metrics.jsonl` (every logged step), `logs/training.log`, TensorBoard files under `runs/`,
and returns what goes into `train.json` (backend and precision with the reasons they were chosen,
losses, checkpoints, resources).

A killed training resumes from the newest complete checkpoint on the next `train`/`all`
(optimizer, scheduler, RNG and data position are restored by the Trainer); `--force` starts over.

Data-parallel on several processes (DDP; gloo on CPU, NCCL on GPUs):
`accelerate launch --config_file configs/accelerate/ddp_cpu.yaml run.py train --config ...`. Every
process trains on its share of each batch; only the main process writes files (adapter, logs,
checkpoints, `train.json`), and it alone decides which checkpoint to resume from.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer import prompt_format
from trainer.config import PipelineConfig, TrainConfig, stage_fingerprint
from trainer.errors import UserError
from trainer.models import load_tokenizer, resolve_base_model
from trainer.pipeline import is_main_process
from trainer.runfolder import RunDir, atomic_dir, cpu_bf16_units, cpu_model, read_jsonl, write_text

log = logging.getLogger("trainer.train")
CHECKPOINTS = "checkpoints"
FINGERPRINT_FILE = "FINGERPRINT"


def unsloth_available() -> tuple[bool, str]:
    """Import Unsloth (it must come before trl/transformers/peft); say why not when it fails."""
    if os.environ.get("FT_DISABLE_UNSLOTH") == "1":
        return False, "FT_DISABLE_UNSLOTH=1"
    try:
        import unsloth  # noqa: F401
    except Exception as exc:  # ImportError, or a RuntimeError from its hardware checks
        return False, f"unsloth does not import here: {type(exc).__name__}: {str(exc)[:200]}"
    return True, "unsloth imports"


def choose_backend(cfg: PipelineConfig) -> tuple[str, str]:
    wanted = cfg.train.backend
    if wanted == "peft":
        return "peft", "train.backend=peft"
    ok, why = unsloth_available()
    if ok:
        return "unsloth", f"train.backend={wanted}; {why}"
    if wanted == "unsloth":
        raise UserError(
            f"train.backend=unsloth but {why}.",
            fix="install the GPU extras (python3 -m trainer.bootstrap on a CUDA machine) or use train.backend=peft",
        )
    return "peft", f"train.backend=auto fell back to peft: {why}"


def choose_precision(requested: str, cpu_bf16: list[str] | None = None) -> tuple[str, str]:
    """(fp32 | fp16 | bf16, why). On a CPU, bf16 autocast where the CPU has bf16 units
    (`cpu_bf16`, detected when None), fp32 elsewhere; fp16 needs a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        units = cpu_bf16_units() if cpu_bf16 is None else cpu_bf16
        has = f"this CPU has bf16 units ({', '.join(units)})"
        if requested in ("auto", "bf16") and units:
            return (
                "bf16",
                f"{'auto' if requested == 'auto' else 'train.precision=bf16'}: no CUDA GPU; {has}, bf16 autocast on the CPU",
            )
        if requested == "auto":
            return "fp32", "auto: no CUDA GPU and no bf16 unit on this CPU (avx512_bf16/amx_bf16), fp32"
        if requested == "bf16":
            return "fp32", "train.precision=bf16 but there is no CUDA GPU and this CPU has no bf16 unit; fp32"
        if requested == "fp16":
            return "fp32", "train.precision=fp16 needs a CUDA GPU; this machine has none, so fp32"
        return requested, f"train.precision={requested}"
    if requested == "auto":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: the GPU supports bf16"
        return "fp16", "auto: the GPU has no bf16, fp16 mixed precision"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        return "fp16", "train.precision=bf16 but the GPU has no bf16; fp16 instead"
    return requested, f"train.precision={requested}"


def _quantization(cfg: PipelineConfig) -> tuple[bool, str]:
    import torch

    if not cfg.model.load_in_4bit:
        return False, "model.load_in_4bit=false"
    if not torch.cuda.is_available():
        return False, "model.load_in_4bit=true needs a CUDA GPU (bitsandbytes NF4); trained in full precision"
    return True, "4-bit NF4 (bitsandbytes) on CUDA"


def _dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _load_unsloth(cfg: PipelineConfig, model_ref: str, precision: str, four_bit: bool) -> tuple[Any, Any]:
    from unsloth import FastLanguageModel

    name = cfg.model.name_4bit if four_bit and cfg.model.name_4bit else model_ref
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=name,
        max_seq_length=cfg.data.max_length,
        dtype=_dtype(precision) if precision != "fp32" else None,
        load_in_4bit=four_bit,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    t = cfg.train
    model = FastLanguageModel.get_peft_model(
        model,
        r=t.lora_r,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        target_modules=list(t.target_modules),
        bias="none",
        use_gradient_checkpointing="unsloth" if t.gradient_checkpointing else False,
        random_state=t.seed,
    )
    return model, tokenizer


def _load_peft(cfg: PipelineConfig, model_ref: str, precision: str, four_bit: bool) -> tuple[Any, Any]:
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"trust_remote_code": cfg.model.trust_remote_code}
    if four_bit:
        import torch
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if precision == "bf16" else torch.float16,
            bnb_4bit_use_double_quant=True,
        )
    else:
        kwargs["dtype"] = _dtype(precision) if precision != "fp32" else _dtype("fp32")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_ref, **kwargs)
    except OSError as exc:
        raise UserError(f"could not load model '{model_ref}': {exc}") from None
    if four_bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.train.gradient_checkpointing
        )
    elif cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model = get_peft_model(model, lora_config(cfg))
    return model, load_tokenizer(model_ref, cfg.model.trust_remote_code)


def optimizer_args(t: TrainConfig) -> dict[str, Any]:
    """The batch, optimizer, schedule and seed arguments of `TrainingArguments` from the config:
    one definition for training and for the training-speed baseline, so both run the same recipe."""
    return {
        "per_device_train_batch_size": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "learning_rate": t.learning_rate,
        "warmup_steps": t.warmup_steps,
        "lr_scheduler_type": t.lr_scheduler,
        "optim": t.optimizer,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "seed": t.seed,
        "data_seed": t.seed,
    }


def lora_config(cfg: PipelineConfig) -> Any:
    """The PEFT LoRA settings from `train.*` (the Unsloth backend passes the same values)."""
    from peft import LoraConfig

    t = cfg.train
    return LoraConfig(
        r=t.lora_r,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        target_modules=list(t.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


BACKENDS: dict[str, Callable[[PipelineConfig, str, str, bool], tuple[Any, Any]]] = {
    "unsloth": _load_unsloth,
    "peft": _load_peft,
}


def _sft_trainer_class(backend: str) -> Any:
    from transformers import Trainer
    from trl import SFTTrainer

    if backend == "unsloth":
        return SFTTrainer

    class PlainLossSFTTrainer(SFTTrainer):
        """TRL 1.15 always routes the loss through its Triton-only fused LM head; its own
        deprecation text says to override compute_loss for a plain backend. This is the stock
        transformers loss (mean token cross-entropy over the completion labels)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = {**inputs, "use_cache": False}
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return PlainLossSFTTrainer


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


def _callbacks(run_dir: RunDir, resume_step: int, main: bool) -> list[Any]:
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

    return [MetricsLog()]


def _setup_logging(run_dir: RunDir) -> logging.Handler:
    path = run_dir / "logs" / "training.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("trainer",):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    return handler


def tokenize_conversation(tokenizer: Any, pieces: list[tuple[str, bool]]) -> dict[str, list[int]]:
    """input_ids and labels of a conversation given as (text, is_answer) pieces: the loss is on
    every answer and on nothing else (labels -100).

    Each piece's tokens are those the tokenized text gains when the piece is appended, as TRL
    does for one prompt/completion pair (a piece starts where the shorter and the longer
    tokenization diverge); the end-of-sequence token is appended when the text lacks it.
    """
    from trl.data_utils import common_prefix_length  # TRL's own boundary rule

    eos = tokenizer.eos_token
    if eos and not pieces[-1][0].endswith(eos):
        pieces = [*pieces[:-1], (pieces[-1][0] + eos, True)]
    ids: list[int] = []
    labels: list[int] = []
    text = ""
    for piece, is_answer in pieces:
        text += piece
        longer = tokenizer(text)["input_ids"]
        start = common_prefix_length(ids, longer)
        del ids[start:], labels[start:]
        ids += longer[start:]
        labels += longer[start:] if is_answer else [-100] * (len(longer) - start)
    return {"input_ids": ids, "labels": labels}


def _load_split(run_dir: RunDir, split: str, fmt: prompt_format.PromptFormat, tokenizer: Any) -> Any:
    """A prepared split, tokenized with the loss on the answers only (every answer of a multi-turn
    record)."""
    from datasets import Dataset

    path = run_dir / "data" / f"{split}.jsonl"
    if not path.exists():
        raise UserError(f"{path} is missing.", fix="run `python run.py prepare` first")
    rows = read_jsonl(path)
    return Dataset.from_list([tokenize_conversation(tokenizer, fmt.record_segments(r)) for r in rows])


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run(cfg: PipelineConfig, run_dir: RunDir) -> dict[str, Any]:
    backend, backend_reason = choose_backend(cfg)  # Unsloth first: it patches trl/transformers
    import torch
    from trl import SFTConfig

    t = cfg.train
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    main = is_main_process()  # the only process that writes files in a multi-process launch
    handler = _setup_logging(run_dir) if main else None
    fmt = prompt_format.load(run_dir) if (run_dir / prompt_format.FILE_NAME).exists() else None
    if fmt is None:
        raise UserError(
            f"{run_dir / prompt_format.FILE_NAME} is missing.", fix="run `python run.py prepare` first"
        )
    precision, precision_reason = choose_precision(t.precision)
    four_bit, quant_reason = _quantization(cfg)
    model_ref = resolve_base_model(cfg)
    log.info(
        "backend=%s (%s); precision=%s (%s); %s",
        backend,
        backend_reason,
        precision,
        precision_reason,
        quant_reason,
    )

    model, tokenizer = BACKENDS[backend](cfg, model_ref, precision, four_bit)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_ds, val_ds = (_load_split(run_dir, s, fmt, tokenizer) for s in ("train", "val"))
    params_total = sum(p.numel() for p in model.parameters())
    params_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    ckpt_dir = run_dir / CHECKPOINTS
    eval_steps = max(1, t.eval_steps)
    save_steps = max(1, t.save_steps)
    if save_steps % eval_steps:
        save_steps = eval_steps * max(1, round(save_steps / eval_steps))  # best-model tracking needs it
    args = SFTConfig(
        output_dir=str(ckpt_dir),
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
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
        save_only_model=False,
        ddp_find_unused_parameters=False,  # multi-process: every LoRA weight is used in each forward
    )
    # SFTConfig has set up the process group of a multi-process launch: now ranks can agree.
    resume = _resume_point(ckpt_dir, stage_fingerprint(cfg, "train"), main, args.world_size)
    resume_step = int(resume.name.split("-")[-1]) if resume else 0
    if resume:
        log.info("resuming from %s", resume)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "runs")
    trainer_cls = _sft_trainer_class(backend)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        callbacks=_callbacks(run_dir, resume_step, main),
    )
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
    wall = time.perf_counter() - t0
    eval_metrics = trainer.evaluate()

    adapter_dir = run_dir / "adapter"
    if main:
        with atomic_dir(adapter_dir) as tmp:
            trainer.model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            prompt_format.save(fmt, tmp / prompt_format.FILE_NAME)
            (tmp / "base_model.txt").write_text(model_ref + "\n")
    trainer.accelerator.wait_for_everyone()  # no process returns before the adapter is written
    if not main:
        return {"global_step": trainer.state.global_step}  # train.json is the main process's

    state = trainer.state
    history = read_jsonl(run_dir / "logs" / "metrics.jsonl")
    losses = [r for r in history if "loss" in r]
    evals = [r for r in history if "eval_loss" in r]
    checkpoints = []
    for path in _complete_checkpoints(ckpt_dir):
        step = int(path.name.split("-")[-1])
        checkpoints.append(
            {
                "step": step,
                "train_loss": next((r["loss"] for r in reversed(losses) if r["step"] <= step), None),
                "eval_loss": next((r["eval_loss"] for r in evals if r["step"] == step), None),
                "path": str(path.relative_to(run_dir.path)),
            }
        )
    best = None
    if state.best_model_checkpoint:
        best_step = int(Path(state.best_model_checkpoint).name.split("-")[-1])
        best = {
            "step": best_step,
            "eval_loss": state.best_metric,
            "path": str(Path(state.best_model_checkpoint).relative_to(run_dir.path)),
        }
    trained_tokens = int(state.num_input_tokens_seen or 0)
    steps_this_run = max(1, state.global_step - resume_step)
    cuda = torch.cuda.is_available()
    resources = {
        "wall_time_s": round(wall, 2),
        "trained_tokens": trained_tokens,
        "tokens_per_s": round(trained_tokens * (steps_this_run / max(1, state.global_step)) / wall, 2),
        "s_per_step": round(wall / steps_this_run, 3),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_gpu_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
        "peak_gpu_allocated_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "gpu_reason": None if cuda else "no CUDA GPU on this machine",
        "gpu_name": torch.cuda.get_device_name(0) if cuda else None,
        "cpu_model": cpu_model(),
        "disk_bytes": _disk_bytes(adapter_dir) + _disk_bytes(ckpt_dir),
    }
    world = args.world_size
    notes = []
    if backend_reason.startswith("train.backend=auto fell back"):
        notes.append(backend_reason)
    if cfg.model.load_in_4bit and not four_bit:
        notes.append(quant_reason)
    if precision_reason.startswith("train.precision=") and precision != t.precision:
        notes.append(precision_reason)
    if resume:
        notes.append(f"resumed from {resume.name}")
    if world > 1:
        notes.append(
            f"data-parallel on {world} processes: tokens/s counts all of them, peak RSS is the main process's"
        )
    if handler:
        logging.getLogger("trainer").removeHandler(handler)
        handler.close()
    return {
        "backend": backend,
        "backend_reason": backend_reason,
        "precision": precision,
        "precision_reason": precision_reason,
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({cpu_model()})",
        "quantization": "4-bit NF4" if four_bit else "none",
        "quantization_reason": quant_reason,
        "base_model": cfg.model.name,
        "base_model_path": model_ref,
        "params_total": params_total,
        "params_trainable": params_trainable,
        "lora": {
            "r": t.lora_r,
            "alpha": t.lora_alpha,
            "dropout": t.lora_dropout,
            "target_modules": t.target_modules,
        },
        "hyperparameters": {
            "epochs": t.epochs,
            "max_steps": t.max_steps,
            "per_device_batch_size": t.per_device_batch_size,
            "gradient_accumulation_steps": t.gradient_accumulation_steps,
            "effective_batch_size": t.per_device_batch_size * t.gradient_accumulation_steps * world,
            "learning_rate": t.learning_rate,
            "warmup_steps": t.warmup_steps,
            "lr_scheduler": t.lr_scheduler,
            "optimizer": t.optimizer,
            "max_length": cfg.data.max_length,
            "world_size": world,
            "seed": t.seed,
        },
        "global_step": state.global_step,
        "train_loss_first": losses[0]["loss"] if losses else None,
        "train_loss_last": losses[-1]["loss"] if losses else None,
        "eval_loss_first": evals[0]["eval_loss"] if evals else None,
        "eval_loss_last": eval_metrics.get("eval_loss"),
        "checkpoints": checkpoints,
        "best_checkpoint": best,
        "resumed_from": str(resume.relative_to(run_dir.path)) if resume else None,
        "resources": resources,
        "files": {
            "adapter": "adapter",
            "metrics": "logs/metrics.jsonl",
            "log": "logs/training.log",
            "tensorboard": "runs",
        },
        "headline": f"{backend}/{precision}, {state.global_step} steps, loss "
        f"{losses[0]['loss'] if losses else float('nan'):.3f} -> {losses[-1]['loss'] if losses else float('nan'):.3f}, "
        f"{resources['tokens_per_s']:.0f} tok/s",
        "notes": notes,
    }
