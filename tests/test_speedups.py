"""trainer/speedups.py computes what the stock code computes: transformers' eager attention, PEFT's
LoRA layer and the LM head's cross-entropy, in values and gradients (fp32: to fp32 rounding; bf16: no
further from an fp32 reference than the stock bf16 path, within a small margin)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _tiny_llama(kv_heads: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(3, 300, (3, 20))
    mask = torch.ones_like(ids)
    mask[1, 14:] = 0  # right padding
    mask[2, 9:] = 0
    return ids, mask


def _loss_and_grads(model, ids, mask):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_grouped_attention_equals_eager_attention(kv_heads):
    from trainer.speedups import ATTENTION, use_grouped_attention

    model = _tiny_llama(kv_heads)
    ids, mask = _batch()
    model.set_attn_implementation("eager")
    logits, grads = _loss_and_grads(model, ids, mask)
    assert use_grouped_attention(model)
    assert model.config._attn_implementation == ATTENTION
    got_logits, got_grads = _loss_and_grads(model, ids, mask)
    real = mask.bool()
    assert torch.allclose(got_logits[real], logits[real], atol=1e-5, rtol=1e-5)
    assert got_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(got_grads[name], grad, atol=1e-5, rtol=1e-4), name


def test_grouped_attention_is_not_used_for_other_model_types():
    from trainer.speedups import use_grouped_attention

    model = _tiny_llama(2)
    model.config.model_type = "gemma2"  # soft-capped attention logits: not the same sum
    before = model.config._attn_implementation
    assert not use_grouped_attention(model)
    assert model.config._attn_implementation == before


def _lora_model(dropout: float = 0.0):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        _tiny_llama(2),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "v_proj", "down_proj"]),
    )
    torch.manual_seed(2)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.1)  # B starts at zero; a trained adapter's is not
    return model


def test_fused_lora_layers_equal_peft_layers():
    from trainer.speedups import fuse_lora_scaling

    model = _lora_model()
    ids, mask = _batch()
    logits, grads = _loss_and_grads(model, ids, mask)
    assert fuse_lora_scaling(model) == 3 * 2  # three adapted layers in each of the two blocks
    got_logits, got_grads = _loss_and_grads(model, ids, mask)
    assert torch.allclose(got_logits, logits, atol=1e-5, rtol=1e-5)
    assert {n for n in got_grads if "lora_" in n} == {n for n in grads if "lora_" in n}
    for name, grad in grads.items():
        assert torch.allclose(got_grads[name], grad, atol=1e-5, rtol=1e-4), name
    with model.disable_adapter():  # PEFT's own forward still serves what the fused one does not
        base = model(input_ids=ids, attention_mask=mask).logits
    model.merge_adapter()
    merged = model(input_ids=ids, attention_mask=mask).logits
    model.unmerge_adapter()
    assert torch.allclose(merged, logits, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(base, logits, atol=1e-3)


def test_fused_lora_falls_back_to_peft_with_dropout():
    from trainer.speedups import fuse_lora_scaling

    model = _lora_model(dropout=0.5).train()
    ids, mask = _batch()
    fuse_lora_scaling(model)
    torch.manual_seed(3)
    first = model(input_ids=ids, attention_mask=mask).logits
    torch.manual_seed(3)
    again = model(input_ids=ids, attention_mask=mask).logits
    model.eval()
    plain = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(first, again)  # dropout ran (seeded), through PEFT's own forward
    assert not torch.allclose(first, plain)


def _head_case(dtype):
    torch.manual_seed(4)
    rows = torch.randn(150, 32).to(dtype)
    weight = (torch.randn(5000, 32) * 0.3).to(dtype)  # 5000 x 150 logits: several chunks of rows
    targets = torch.randint(0, 5000, (150,))
    return rows, weight, targets


def _stock_head_loss(rows, weight, targets):
    import torch.nn.functional as F

    rows = rows.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=rows.dtype == torch.bfloat16):
        logits = F.linear(rows, weight)
    loss = F.cross_entropy(logits.float(), targets, reduction="sum") / 77
    loss.backward()
    return loss.detach(), rows.grad.float()


def _fused_head_loss(rows, weight, targets):
    from trainer.speedups import head_cross_entropy

    rows = rows.clone().requires_grad_()
    loss = head_cross_entropy(rows, weight, targets) / 77
    loss.backward()
    return loss.detach(), rows.grad.float()


def test_head_cross_entropy_equals_the_stock_loss_in_fp32(monkeypatch):
    from trainer import speedups

    monkeypatch.setattr(speedups, "_chunk_rows", lambda vocab: 64)  # 150 rows: chunks of 64, 64, 22
    rows, weight, targets = _head_case(torch.float32)
    loss, grad = _stock_head_loss(rows, weight, targets)
    got, got_grad = _fused_head_loss(rows, weight, targets)
    assert torch.allclose(got, loss, rtol=1e-6)
    assert torch.allclose(got_grad, grad, atol=1e-6, rtol=1e-5)


def test_head_cross_entropy_in_bf16_is_as_close_to_fp32_as_the_stock_path():
    rows, weight, targets = _head_case(torch.bfloat16)
    exact, exact_grad = _stock_head_loss(rows.float(), weight.float(), targets)
    stock, stock_grad = _stock_head_loss(rows, weight, targets)
    got, got_grad = _fused_head_loss(rows, weight, targets)

    def err(grad):
        return float((grad - exact_grad).norm() / exact_grad.norm())

    assert abs(float(got - exact)) <= abs(float(stock - exact)) + 1e-4 * float(exact)
    # one more bf16 rounding of the rows' gradient (the upstream scale is applied after the matmul)
    assert err(got_grad) < 2 * err(stock_grad) + 1e-3


def test_head_cross_entropy_refuses_a_trained_head():
    from trainer.speedups import head_cross_entropy

    rows, weight, targets = _head_case(torch.float32)
    with pytest.raises(ValueError, match="no gradient for the head weight"):
        head_cross_entropy(rows, weight.requires_grad_(), targets)
