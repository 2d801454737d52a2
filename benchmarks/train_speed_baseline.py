"""The baseline contestant of `python -m benchmarks.train_speed`: plain transformers `Trainer` + PEFT
LoRA in fp32, every sequence padded to `data.max_length`, no Unsloth and no TRL.

Runs in its own process (`python -m benchmarks.train_speed --baseline-child RUN_DIR ...`, started by
the parent), reads the run folder's prepared `data/train.jsonl` and `prompt_format.json`, and
returns what the parent reads back from `RUN_DIR/baseline.json`. It uses the toolkit's recipe
(trainer/recipe.py: LoRA settings, optimizer arguments, conversation tokenization), so only the
training loop and padding differ from the train stage.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.train_speed_measure import timing_overrides


def _baseline_rows(run_dir: Path, tokenizer: Any, max_length: int) -> list[dict[str, list[int]]]:
    """The prepared records tokenized as the train stage does (trainer.recipe.tokenize_conversation:
    EOS appended, loss on the answers only), truncated at max_length, then padded to max_length."""
    from trainer import prompt_format
    from trainer.recipe import tokenize_conversation
    from trainer.runfolder import read_jsonl

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


def _load_model(cfg: Any) -> tuple[str, Any, Any]:
    """(base model path, tokenizer, fp32 model with the recipe's LoRA), without Unsloth or TRL."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.models import load_tokenizer, resolve_base_model
    from trainer.recipe import lora_config

    model_ref = resolve_base_model(cfg)
    tokenizer = load_tokenizer(model_ref, cfg.model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_ref, dtype=torch.float32)
    model.config.use_cache = False
    return model_ref, tokenizer, get_peft_model(model, lora_config(cfg))


def baseline_child(run_dir: Path, config: Path, steps: int, overrides: list[str]) -> dict[str, Any]:
    """Train `steps` steps with plain transformers; the numbers the parent reads from baseline.json."""
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    from trainer.config import load_config
    from trainer.recipe import optimizer_args

    assert "unsloth" not in sys.modules, "the baseline must run without Unsloth's patches"
    cfg = load_config(config, [*overrides, *timing_overrides(steps)])
    t = cfg.train
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    model_ref, tokenizer, model = _load_model(cfg)
    train_ds = Dataset.from_list(_baseline_rows(run_dir, tokenizer, cfg.data.max_length))
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
