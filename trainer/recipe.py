"""The LoRA fine-tuning recipe, defined once: used by `python run.py train` (trainer/train.py) and by
the training benchmarks (`python -m benchmarks.train_speed`, `python -m benchmarks.gpu_train_llama2`).

What is in the recipe: the LoRA settings (rank, alpha, dropout, target modules), the batch,
optimizer, schedule and seed arguments of `TrainingArguments`, which TRL `SFTTrainer` class trains
for a backend, and how a conversation is tokenized with the loss on the answers only. Every value
comes from the `train.*` section of the config, so the stage and the benchmarks run the same recipe.
Heavy imports (peft, transformers, trl) stay inside the functions.
"""

from __future__ import annotations

from typing import Any

from trainer.config import PipelineConfig, TrainConfig


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


def sft_trainer_class(backend: str) -> Any:
    """The TRL trainer class for a backend: Unsloth's patched `SFTTrainer`, or for plain PEFT a
    subclass with the stock transformers loss."""
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
            if return_outputs or inputs.get("labels") is None:
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            loss = completion_loss(model, self.accelerator.unwrap_model(model), inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss does
            return loss

    return PlainLossSFTTrainer


def completion_loss(
    model: Any, unwrapped: Any, inputs: dict[str, Any], num_items_in_batch: Any = None
) -> Any:
    """The causal-LM loss of transformers (labels shifted by one, cross-entropy in fp32 over the
    positions whose label is not -100, summed and divided by `num_items_in_batch`, else averaged),
    with the LM head applied only to those positions.

    The prompt tokens (about 40 % of the default data) carry no loss, so their logits over the whole
    vocabulary (49 152 x 576 for SmolLM2, a fifth of its matmul weights) and their softmax are never
    computed, forward or backward; Unsloth's chunked loss skips them the same way. The decoder's
    output is taken by a forward hook while the model itself computes logits for no position
    (`logits_to_keep` an empty index), so the model's own forward (autocast, DDP) runs unchanged.
    A frozen plain head goes through `trainer.speedups.head_cross_entropy` (in row chunks, the
    rows' gradient computed in the same pass); a trained or adapted head through the stock ops.
    """
    import torch
    import torch.nn.functional as F

    from trainer.speedups import head_cross_entropy

    inputs = dict(inputs)
    labels = inputs.pop("labels")
    captured: dict[str, Any] = {}

    def keep_output(_module: Any, _args: Any, out: Any) -> None:  # None: the output stays as it is
        captured["h"] = out[0]

    hook = unwrapped.get_decoder().register_forward_hook(keep_output)
    try:
        model(**inputs, logits_to_keep=torch.zeros(0, dtype=torch.long, device=labels.device))
    finally:
        hook.remove()
    targets = labels[:, 1:]
    keep = targets != -100
    rows = captured["h"][:, :-1][keep]
    head = unwrapped.get_output_embeddings()
    device = rows.device.type
    if type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad:
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head.weight.dtype
        loss = head_cross_entropy(rows.to(dtype), head.weight, targets[keep])
    else:
        with torch.autocast(device, dtype=rows.dtype, enabled=rows.dtype != head.weight.dtype):
            logits = head(rows)
        loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    denom = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    return loss / denom


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
