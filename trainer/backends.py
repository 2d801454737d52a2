"""Training backends and their settings, chosen for the machine at hand: used by `python run.py train`
(trainer/train.py) and the training benchmarks.

A backend loads the base model with LoRA attached: Unsloth's FastLanguageModel, or transformers +
PEFT (`LOADERS`, a name -> function table, heavy imports inside each). `choose_backend`,
`choose_precision` and `quantization` say which backend, precision and quantization this machine
gets, each with the reason that goes into `train.json`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from trainer.config import PipelineConfig
from trainer.errors import UserError
from trainer.models import load_tokenizer
from trainer.recipe import lora_config
from trainer.results import BackendChoice, NotMeasured, Reason
from trainer.runfolder import cpu_bf16_units


def unsloth_available() -> tuple[bool, str]:
    """Import Unsloth (it must come before trl/transformers/peft); say why not when it fails."""
    if os.environ.get("FT_DISABLE_UNSLOTH") == "1":
        return False, "FT_DISABLE_UNSLOTH=1"
    try:
        import unsloth  # noqa: F401
    except Exception as exc:  # ImportError, or a RuntimeError from its hardware checks
        return False, f"unsloth does not import here: {type(exc).__name__}: {str(exc)[:200]}"
    return True, "unsloth imports"


def choose_backend(cfg: PipelineConfig, run_dir: Any | None = None) -> BackendChoice:
    """The training backend and why (a code, trainer/results BackendChoice). `auto` on a CPU takes
    the faster backend by a short measured probe in child processes (trainer/backend_probe.py; needs
    the run folder); on a CUDA GPU Unsloth when it imports. Imports Unsloth when it is the choice,
    so call this before anything imports trl/transformers/peft."""
    import torch

    from trainer.backend_probe import choose_auto
    from trainer.processes import world_size

    wanted = cfg.train.backend
    if wanted == "peft":
        return BackendChoice(backend="peft", reason="config", probe=NotMeasured())
    choice: BackendChoice | None = None
    if wanted == "auto" and not torch.cuda.is_available():
        if run_dir is None or world_size() > 1:
            why = (
                "no run folder to probe with" if run_dir is None else "a multi-process launch does not probe"
            )
            choice = BackendChoice(backend="unsloth", reason="not_probed", detail=why, probe=NotMeasured())
        else:
            choice = choose_auto(cfg, run_dir)
            if choice.backend == "peft":
                return choice
    ok, why = unsloth_available()
    if ok:
        if choice is not None:
            return choice
        reason = "config" if wanted == "unsloth" else "cuda_default"
        return BackendChoice(backend="unsloth", reason=reason, probe=NotMeasured())
    if wanted == "unsloth":
        raise UserError(
            f"train.backend=unsloth but {why}.",
            fix="install the GPU extras (python3 -m trainer.bootstrap on a CUDA machine) or use train.backend=peft",
        )
    return BackendChoice(backend="peft", reason="unsloth_unavailable", detail=why, probe=NotMeasured())


def backend_reason(choice: BackendChoice) -> str:
    """The choice in one English line (train.json `backend_reason`, the training log)."""
    probe = choice.probe
    speeds = ", ".join(
        f"{r.backend} {r.tokens_per_s:.1f}"
        if isinstance(r.tokens_per_s, (int, float))
        else f"{r.backend} failed"
        for r in probe.runs
    )
    measured = (
        f" ({speeds} trained tokens/s{', cached probe' if probe.cached is True else ''})" if speeds else ""
    )
    text = {
        "config": f"train.backend={choice.backend}",
        "probe_faster": f"train.backend=auto: {choice.backend} was the faster in the probe{measured}",
        "probe_other_failed": f"train.backend=auto: {choice.backend}, the other backend failed in the probe{measured}",
        "probe_failed": f"train.backend=auto: the probe failed for both backends, peft{measured}",
        "unsloth_unavailable": f"train.backend=auto fell back to peft: {choice.detail}",
        "cuda_default": "train.backend=auto: unsloth on a CUDA GPU (not probed)",
        "not_probed": f"train.backend=auto: unsloth, not probed ({choice.detail})",
    }
    return text.get(str(choice.reason), f"{choice.backend}: {choice.reason}")


def choose_precision(requested: str, cpu_bf16: list[str] | None = None) -> tuple[str, str, Reason]:
    """(fp32 | fp16 | bf16, why in English, why as a code). On a CPU, bf16 autocast where the CPU has
    bf16 units (`cpu_bf16`, detected when None), fp32 elsewhere; fp16 needs a CUDA GPU."""
    import torch

    setting = "auto" if requested == "auto" else f"train.precision={requested}"
    if not torch.cuda.is_available():
        units = cpu_bf16_units() if cpu_bf16 is None else cpu_bf16
        if requested in ("auto", "bf16") and units:
            return (
                "bf16",
                f"{setting}: no CUDA GPU; this CPU has bf16 units ({', '.join(units)}), bf16 autocast on the CPU",
                Reason(code="cpu_bf16_autocast", params={"requested": requested, "units": list(units)}),
            )
        if requested in ("auto", "bf16"):
            return (
                "fp32",
                f"{setting}: no CUDA GPU and no bf16 unit on this CPU (avx512_bf16/amx_bf16), fp32",
                Reason(code="cpu_no_bf16", params={"requested": requested}),
            )
        if requested == "fp16":
            return (
                "fp32",
                "train.precision=fp16 needs a CUDA GPU; this machine has none, so fp32",
                Reason(code="fp16_needs_cuda", params={"requested": requested}),
            )
        return requested, setting, Reason(code="as_configured", params={"requested": requested})
    if requested in ("auto", "bf16") and torch.cuda.is_bf16_supported():
        if requested == "auto":
            return (
                "bf16",
                "auto: the GPU supports bf16",
                Reason(code="gpu_bf16", params={"requested": requested}),
            )
    elif requested in ("auto", "bf16"):
        return (
            "fp16",
            f"{setting}: the GPU has no bf16, fp16 mixed precision",
            Reason(code="gpu_no_bf16", params={"requested": requested}),
        )
    return requested, setting, Reason(code="as_configured", params={"requested": requested})


def quantization(cfg: PipelineConfig) -> tuple[bool, str, Reason]:
    """(4-bit or not, why in English, why as a code): NF4 needs bitsandbytes on a CUDA GPU."""
    import torch

    if not cfg.model.load_in_4bit:
        return False, "model.load_in_4bit=false", Reason(code="4bit_off")
    if not torch.cuda.is_available():
        return (
            False,
            "model.load_in_4bit=true needs a CUDA GPU (bitsandbytes NF4); trained in full precision",
            Reason(code="4bit_needs_cuda"),
        )
    return True, "4-bit NF4 (bitsandbytes) on CUDA", Reason(code="4bit_nf4")


def _dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def load_unsloth(cfg: PipelineConfig, model_ref: str, precision: str, four_bit: bool) -> tuple[Any, Any]:
    import torch
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
    if precision != "fp32" and not four_bit and not torch.cuda.is_available():
        _autocast_lora_inputs(model)  # on a CPU Unsloth's LoRA layers are PEFT's own
    return model, tokenizer


def load_peft(cfg: PipelineConfig, model_ref: str, precision: str, four_bit: bool) -> tuple[Any, Any]:
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"trust_remote_code": cfg.model.trust_remote_code}
    if four_bit:
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
    if precision != "fp32" and not four_bit:
        _autocast_lora_inputs(model)
    if not four_bit and not torch.cuda.is_available():
        _cpu_speedups(model)
    return model, load_tokenizer(model_ref, cfg.model.trust_remote_code)


def _cpu_speedups(model: Any) -> None:
    """On a CPU, the exact reformulations of trainer/speedups.py: the grouped attention (for the
    model types whose eager attention it reproduces) and the one-`addmm` LoRA layers."""
    from trainer.speedups import fuse_lora_scaling, use_grouped_attention

    use_grouped_attention(model.get_base_model())
    fuse_lora_scaling(model)


def _autocast_lora_inputs(model: Any) -> None:
    """Let autocast, not PEFT, cast the inputs of the LoRA layers.

    In mixed precision the base weights are bf16/fp16 and the LoRA weights fp32; PEFT casts each LoRA
    layer's input up to fp32 and autocast casts it straight back down for the matmul, two copies of
    the activations per adapted layer and their backward. Both casts are exact (bf16 -> fp32 -> bf16),
    so skipping them changes no number: measured on a bf16 CPU it cut a training step by about an
    eighth (benchmarks/RESULTS.md). Every training forward runs under the Trainer's autocast, and a
    forward outside it would fail loudly on the dtype mismatch rather than compute something else.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


# name -> loader(cfg, model_ref, precision, four_bit) -> (model with LoRA, tokenizer)
LOADERS: dict[str, Callable[[PipelineConfig, str, str, bool], tuple[Any, Any]]] = {
    "unsloth": load_unsloth,
    "peft": load_peft,
}
