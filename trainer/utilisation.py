"""Training utilisation: model FLOPs per trained token and this machine's matrix-multiply peak.

Used by the train stage (`python run.py train`, trainer/train.py: `utilisation` in train.json) and by
`python -m benchmarks.train_speed` (benchmarks/train_speed_measure.py). Reads the base model's
config.json; writes nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

FLOPS_METHOD = (
    "4 x N_frozen + 6 x N_lora per trained token (LoRA: no weight gradients for the frozen base); "
    "N = weights in matrix multiplies (LM head included, embedding lookup not); attention scores left out"
)


def flop_params(base_model_path: str, params_total: int, params_trainable: int) -> dict[str, int]:
    """Frozen and LoRA weights used in matrix multiplies (an untied input embedding is a lookup)."""
    frozen = params_total - params_trainable
    embedding = 0
    cfg_path = Path(base_model_path) / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        text = cfg.get("text_config", cfg)
        if not text.get("tie_word_embeddings", cfg.get("tie_word_embeddings", True)):
            embedding = int(text.get("vocab_size", 0)) * int(text.get("hidden_size", 0))
    return {"n_frozen_matmul": frozen - embedding, "n_lora": params_trainable}


def model_flops_per_token(params: dict[str, int]) -> int:
    """Forward 2N, backward through the frozen base 2N (activation gradients only), LoRA weights 6N."""
    return 4 * params["n_frozen_matmul"] + 6 * params["n_lora"]


def matmul_peak(dtype: str = "fp32", n: int = 1024, repeats: int = 20) -> dict[str, Any]:
    """This machine's n x n matmul rate in `dtype` (fp32 | bf16 | fp16) with torch: on the CUDA GPU
    when there is one, else on the CPU with all of torch's threads, as training uses them."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    n = max(n, 4096) if cuda else n
    a = torch.randn(n, n, dtype=torch_dtype, device=device)
    b = torch.randn(n, n, dtype=torch_dtype, device=device)
    best = float("inf")
    for i in range(repeats + 1):  # the first is warm-up: thread pool / kernel selection
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - t0)
    where = torch.cuda.get_device_name(0) if cuda else f"CPU, {torch.get_num_threads()} threads"
    return {
        "peak_flops_per_s": round(2 * n**3 / best),
        "dtype": dtype,
        "method": f"torch {dtype} matmul {n}x{n}, best of {repeats}, {where}",
        "threads": torch.get_num_threads(),
    }
