"""Faster LoRA training steps by exact reformulations: the same sums in fewer, larger operations.

Used by the PEFT backend (trainer/backends.py) and its loss (trainer/recipe.py). Each one computes
what the stock code computes (transformers' attention and loss, PEFT's LoRA layer), up to the order
of floating-point rounding; tests/test_speedups.py compares values and gradients with the stock code.
Measured on a CPU, where none of these steps has a fused kernel (benchmarks/RESULTS.md):

- `grouped_attention`: the attention of a model with grouped key/value heads, without copying the
  keys and values once per query head (the stock eager path repeats them) and with the softmax in the
  activations' dtype (PyTorch's CPU softmax accumulates a bf16 input in fp32 either way, so its only
  rounding is the one the stock path does when it casts the fp32 softmax down). The scale goes on
  the queries instead of the scores: exact for a power-of-two scale (64- or 256-dim heads), else one
  more rounding of the queries in bf16. The CPU flash kernel of `sdpa` spends most of a training
  step's attention time in its backward.
- `fuse_lora_scaling`: a LoRA layer's `result + lora_B(lora_A(x)) * scaling` as one `addmm`
  (the scaling is applied inside the matrix multiply), instead of a scaling pass and an addition
  over the whole output.
- `head_cross_entropy`: the language-model head and the cross-entropy over the answer positions in
  row chunks, with the gradient for the rows computed in the same pass: the full-vocabulary logits,
  their fp32 copy and their softmax are never held for the whole batch (as Unsloth's and Liger's
  fused losses do on GPUs).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F

ATTENTION = "grouped_eager"  # the name `grouped_attention` is registered under in transformers
# Model types whose eager attention is exactly scores = q k^T x scaling + mask, softmax, x v (no
# logit soft-capping, sinks or extra terms), the sum `grouped_attention` reproduces.
GROUPED_ATTENTION_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def grouped_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float,
    dropout: float = 0.0,
    **_kwargs: Any,
) -> tuple[Any, None]:
    """transformers' eager attention for `query` [B, H, L, D] and `key`/`value` [B, KV, S, D] with
    H a multiple of KV: the H / KV query heads that share a key/value head are stacked on the query
    axis ([B, KV, H / KV x L, D]), so the keys and values are used as they are. The additive mask
    [B, 1, L, S] (0 or the dtype's minimum) broadcasts over the stacked heads. Returns the output as
    [B, L, H, D] (what the attention layers expect) and no attention weights."""
    b, h, q_len, d = query.shape
    kv, s = key.shape[1], key.shape[2]
    groups = h // kv
    q = (query * scaling).reshape(b, kv, groups * q_len, d)  # the scale on L x D, not on L x S
    scores = torch.matmul(q, key.transpose(2, 3)).view(b, kv, groups, q_len, s)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, None, :, :s].to(scores.dtype)
    probs = torch.softmax(scores, dim=-1).view(b, kv, groups * q_len, s)
    if dropout and module.training:
        probs = F.dropout(probs, p=dropout)
    out = torch.matmul(probs, value).view(b, h, q_len, d)
    return out.transpose(1, 2).contiguous(), None


def use_grouped_attention(model: Any) -> bool:
    """Switch a transformers model to `grouped_attention` (registered with the eager mask); False,
    unchanged, for a model type outside GROUPED_ATTENTION_MODELS."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    if getattr(model.config, "model_type", None) not in GROUPED_ATTENTION_MODELS:
        return False
    AttentionInterface.register(ATTENTION, grouped_attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)
    model.set_attn_implementation(ATTENTION)
    return True


def _fused_lora_forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    """PEFT's `lora.Linear.forward` for one plain adapter (no dropout, no DoRA or other variant), with
    `result + lora_B(lora_A(x)) * scaling` as one `addmm`; anything else goes to PEFT's own forward."""
    names = self.active_adapters
    name = names[0] if len(names) == 1 else None
    if (
        args
        or kwargs
        or self.disable_adapters
        or self.merged
        or name not in self.lora_A
        or name in self.lora_variant
        or not isinstance(self.lora_dropout[name], torch.nn.Identity)
    ):
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    low = self.lora_A[name](x)
    out = torch.addmm(
        result.reshape(-1, result.shape[-1]),
        low.reshape(-1, low.shape[-1]),
        self.lora_B[name].weight.t(),
        alpha=self.scaling[name],
    )
    return out.view(result.shape).to(result.dtype)


def fuse_lora_scaling(model: Any) -> int:
    """Give every PEFT LoRA `Linear` layer of `model` the one-`addmm` forward; returns how many."""
    from peft.tuners.lora import Linear

    count = 0
    for module in model.modules():
        if type(module) is Linear:  # subclasses (quantized layers) keep their own forward
            module.forward = types.MethodType(_fused_lora_forward, module)
            count += 1
    return count


def _chunk_rows(vocab: int) -> int:
    """Rows per chunk: about 8 M logits (32 MB in fp32), so a chunk's buffers are reused by the
    allocator instead of mapped afresh for every chunk."""
    return max(16, (1 << 23) // max(1, vocab))


def head_cross_entropy(rows: Any, weight: Any, targets: Any) -> Any:
    """sum over rows of cross_entropy(rows @ weight.T, targets) in fp32, with the matrix multiplies in
    the rows' dtype, as `F.cross_entropy(head(rows).float(), targets, reduction="sum")` under autocast
    computes it. `weight` must be frozen: its gradient is not computed."""
    if weight.requires_grad:
        raise ValueError("head_cross_entropy computes no gradient for the head weight")
    return _HeadCrossEntropy.apply(rows, weight.to(rows.dtype), targets)


def _head_cross_entropy_chunks(rows: Any, weight: Any, targets: Any, need_grad: bool) -> tuple[Any, Any]:
    loss = torch.zeros((), dtype=torch.float32, device=rows.device)
    grad = torch.empty_like(rows) if need_grad else None
    step = _chunk_rows(weight.shape[0])
    for start in range(0, rows.shape[0], step):
        part = rows[start : start + step]
        tgt = targets[start : start + step]
        logp = torch.log_softmax(torch.matmul(part, weight.t()).float(), dim=-1)
        loss -= logp.gather(1, tgt[:, None]).sum()
        if grad is not None:
            probs = logp.exp_()  # the softmax, in place of the log-probabilities
            probs[torch.arange(tgt.shape[0], device=tgt.device), tgt] -= 1.0
            torch.matmul(probs.to(weight.dtype), weight, out=grad[start : start + step])
    return loss, grad


class _HeadCrossEntropy(torch.autograd.Function):
    """The loss in the forward pass; the rows' gradient, computed there too, scaled in the backward."""

    @staticmethod
    def forward(ctx: Any, rows: Any, weight: Any, targets: Any) -> Any:
        with torch.autocast(rows.device.type, enabled=False):  # the rows' dtype is the compute dtype
            loss, grad = _head_cross_entropy_chunks(rows, weight, targets, rows.requires_grad)
        ctx.save_for_backward(grad)  # None when the rows need no gradient: no backward then
        return loss

    @staticmethod
    def backward(ctx: Any, upstream: Any) -> tuple[Any, None, None]:
        (grad,) = ctx.saved_tensors
        return grad * upstream.to(grad.dtype), None, None
