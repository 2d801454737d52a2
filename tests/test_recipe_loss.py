"""The PEFT backend's loss (trainer/recipe.py `completion_loss`) equals transformers' own causal-LM
loss while it applies the LM head to the answer positions only."""

from __future__ import annotations


def test_completion_loss_equals_the_models_own_loss(tiny_cfg):
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.models import resolve_base_model
    from trainer.recipe import completion_loss, lora_config

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(resolve_base_model(tiny_cfg), dtype=torch.float32),
        lora_config(tiny_cfg),
    )
    ids = torch.randint(5, 2000, (3, 24))
    mask = torch.ones_like(ids)
    mask[2, 18:] = 0  # a padded row
    labels = ids.clone()
    labels[0, :10] = labels[1, :4] = labels[2, :7] = -100  # prompts carry no loss
    labels[2, 18:] = -100
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    expected = model(**inputs).loss
    got = completion_loss(model, model, inputs)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6), (got, expected)
    n = int((labels[:, 1:] != -100).sum())
    summed = completion_loss(model, model, inputs, num_items_in_batch=torch.tensor(2 * n))
    assert torch.allclose(summed * 2, expected, rtol=1e-5, atol=1e-6)
    got.backward()
    assert all(p.grad is not None for n_, p in model.named_parameters() if p.requires_grad)
