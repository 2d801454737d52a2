"""4-bit QLoRA training speed of a Llama-2-7B-shaped model on one CUDA GPU: Unsloth vs plain PEFT.

    python -m benchmarks.gpu_train_llama2                      # seq 2048, batch 4, r=8, dropout 0
    python -m benchmarks.gpu_train_llama2 --seq-len 1024 --lora-dropout 0.05 --steps 20
    python -m benchmarks.gpu_train_llama2 --help

The published comparison (REFERENCE.md: Llama-2-7B, LoRA r=8, one A100, 4-bit) is Hugging Face
2415 tokens/s at 9 GB against Unsloth 3726 tokens/s at 7 GB (1.54x). This script measures the same
kind of numbers on the GPU at hand, without the hub:

1. A child process builds a LlamaForCausalLM with Llama-2-7B's shape (hidden 4096, 32 layers,
   32 heads, MLP 11008, vocabulary 32000) and random bf16 weights, and saves it as safetensors with
   a dummy 32000-token tokenizer (`--model-dir`, default a temporary folder; ~13.5 GB of disk).
   Speed and memory depend on the shapes, not on the weights' values.
2. For each backend, a fresh child process loads that folder in 4-bit NF4 through the toolkit's own
   loaders (trainer/backends.py `LOADERS`: Unsloth's FastLanguageModel, or transformers +
   bitsandbytes + PEFT), adds LoRA (r=8, alpha=16, all 7 projections, dropout 0 or `--lora-dropout`)
   and trains with the toolkit's TRL SFTTrainer class (trainer/recipe.py) on random token
   sequences of exactly `--seq-len` tokens (no padding: every token is trained), batch
   `--batch-size`, gradient checkpointing on (as 7B on one GPU needs;
   `--no-gradient-checkpointing` turns it off).
3. tokens/s = batch x seq_len x timed steps / their wall time (the first `--warmup-steps` steps are
   not timed); peak VRAM = torch.cuda.max_memory_reserved() during training (reset after the model
   is loaded; the load's own peak is recorded separately).

Prints a table and writes JSON (`--out`, default benchmarks/results/gpu_train_llama2-<timestamp>.json).
Exits with status 2 and a message when there is no CUDA GPU. Needs the GPU install (Unsloth with
its CUDA dependencies, bitsandbytes); not runnable on the project's CPU machines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from trainer.backends import LOADERS
from trainer.runfolder import ROOT, environment, write_json

# The train stage's backends, by their loaders (train.backend without "auto").
BACKENDS = tuple(LOADERS)
LLAMA2_7B_SHAPE = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
}
PUBLISHED_A100_4BIT = {
    "source": "Unsloth's published Llama-2-7B LoRA r=8 comparison on one A100 (REFERENCE.md)",
    "hf": {"tokens_per_s": 2415, "peak_vram_gb": 9},
    "unsloth": {"tokens_per_s": 3726, "peak_vram_gb": 7},
}
NO_GPU_MESSAGE = (
    "error: no CUDA GPU: this benchmark trains a 7B model in 4-bit and needs one CUDA GPU "
    "(with bitsandbytes and Unsloth's GPU install). Nothing was run."
)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# --- child 1: the random Llama-2-7B-shaped checkpoint ---------------------------------------------


def build_model(model_dir: Path, seed: int) -> dict[str, Any]:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    config = LlamaConfig(**LLAMA2_7B_SHAPE, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(model_dir, safe_serialization=True)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, config.vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>"
    ).save_pretrained(model_dir)
    return {"params": sum(p.numel() for p in model.parameters()), "dir": str(model_dir)}


# --- child 2: one backend's training --------------------------------------------------------------


def _backend_config(backend: str, model_dir: Path, opts: dict[str, Any]) -> Any:
    """The toolkit's config for one backend: the random checkpoint in 4-bit, this run's LoRA settings."""
    from trainer.config import load_config

    return load_config(
        None,
        [
            f"model.name={model_dir}",
            "model.load_in_4bit=true",
            f"data.max_length={opts['seq_len']}",
            f"train.backend={backend}",
            f"train.lora_r={opts['lora_r']}",
            f"train.lora_alpha={opts['lora_alpha']}",
            f"train.lora_dropout={opts['lora_dropout']}",
            f"train.gradient_checkpointing={str(opts['gradient_checkpointing']).lower()}",
            f"train.seed={opts['seed']}",
        ],
    )


def _random_tokens(opts: dict[str, Any]) -> Any:
    """steps x batch sequences of exactly seq_len random token ids (no padding: every token trains)."""
    import torch
    from datasets import Dataset

    steps, batch, seq = opts["steps"], opts["batch_size"], opts["seq_len"]
    gen = torch.Generator().manual_seed(opts["seed"])
    ids = torch.randint(3, LLAMA2_7B_SHAPE["vocab_size"], (steps * batch, seq), generator=gen)
    return Dataset.from_dict({"input_ids": ids.tolist()})


def _sft_args(output_dir: Path, precision: str, opts: dict[str, Any]) -> Any:
    """The fixed training settings of the published comparison (not the toolkit's config defaults)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        max_steps=opts["steps"],
        per_device_train_batch_size=opts["batch_size"],
        gradient_accumulation_steps=1,
        learning_rate=2e-4,
        warmup_steps=0,
        optim="adamw_torch",
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        seed=opts["seed"],
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        max_length=opts["seq_len"],
        packing=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def train_backend(backend: str, model_dir: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """Child process: load the checkpoint in 4-bit with one backend's loader, train, time the steps."""
    from trainer.backends import LOADERS, backend_reason, choose_backend

    cfg = _backend_config(backend, model_dir, opts)
    choice = choose_backend(cfg)  # imports Unsloth first when it is the backend
    backend = str(choice.backend)
    import torch
    from transformers import TrainerCallback

    from trainer.recipe import sft_trainer_class

    precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    torch.cuda.reset_peak_memory_stats()
    t_load = time.perf_counter()
    model, tokenizer = LOADERS[backend](cfg, str(model_dir), precision, True)
    load_s = time.perf_counter() - t_load
    load_peak = torch.cuda.max_memory_reserved()
    params_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    marks: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            marks.append(time.perf_counter())

    trainer = sft_trainer_class(backend)(
        model=model,
        args=_sft_args(model_dir.parent / f"ckpt-{backend}", precision, opts),
        train_dataset=_random_tokens(opts),
        processing_class=tokenizer,
        callbacks=[StepClock()],
    )
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {
        "backend": backend,
        "backend_reason": backend_reason(choice),
        "precision": precision,
        "gpu": torch.cuda.get_device_name(0),
        "params_trainable": params_trainable,
        "load_s": round(load_s, 1),
        "peak_vram_reserved_load_bytes": load_peak,
        "peak_vram_reserved_bytes": torch.cuda.max_memory_reserved(),
        "peak_vram_allocated_bytes": torch.cuda.max_memory_allocated(),
        **_step_timing(marks, t0, opts),
        "wall_time_s": round(wall, 2),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }


def _step_timing(marks: list[float], t0: float, opts: dict[str, Any]) -> dict[str, Any]:
    """Timed steps (the first `warmup_steps` left out), their seconds, tokens/s and s/step."""
    warmup = opts["warmup_steps"]
    timed = marks[warmup:] if len(marks) > warmup else marks
    start = marks[warmup - 1] if 0 < warmup < len(marks) else t0
    timed_s = timed[-1] - start
    return {
        "timed_steps": len(timed),
        "timed_s": round(timed_s, 3),
        "tokens_per_s": round(opts["batch_size"] * opts["seq_len"] * len(timed) / timed_s, 1),
        "s_per_step": round(timed_s / len(timed), 3),
    }


# --- the parent -----------------------------------------------------------------------------------


def _child(args: list[str], out: Path, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.gpu_train_llama2", *args, "--child-out", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout_s:.0f} s"}
    if done.returncode != 0 or not out.exists():
        tail = (done.stdout + done.stderr)[-3000:]
        return {"status": "failed", "error": f"exit status {done.returncode}", "log_tail": tail}
    return {"status": "ok", **json.loads(out.read_text())}


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report["settings"]
    table = Table(
        title=f"Llama-2-7B shape, 4-bit NF4, LoRA r={s['lora_r']} dropout {s['lora_dropout']}, "
        f"seq {s['seq_len']}, batch {s['batch_size']}, {s['steps']} steps"
    )
    for col in ("backend", "status", "tokens/s", "s/step", "peak VRAM GiB", "vs peft"):
        table.add_column(col, justify="left" if col in ("backend", "status") else "right")
    for r in report["results"]:
        ok = r["status"] == "ok"
        table.add_row(
            r["backend"],
            r["status"],
            f"{r['tokens_per_s']:.0f}" if ok else "-",
            f"{r['s_per_step']:.2f}" if ok else "-",
            f"{r['peak_vram_reserved_bytes'] / 2**30:.1f}" if ok else "-",
            f"{r['speedup_vs_peft']:.2f}x" if r.get("speedup_vs_peft") else "-",
        )
    console = Console()
    console.print(table)
    ref = report["published_reference"]
    console.print(
        f"published (A100): HF {ref['hf']['tokens_per_s']} tok/s {ref['hf']['peak_vram_gb']} GB, "
        f"Unsloth {ref['unsloth']['tokens_per_s']} tok/s {ref['unsloth']['peak_vram_gb']} GB"
    )
    for r in report["results"]:
        if r["status"] != "ok":
            console.print(f"[red]{r['backend']} failed[/red]: {r.get('error')}\n{r.get('log_tail', '')}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_train_llama2",
        description="On one CUDA GPU: 4-bit QLoRA training of a random Llama-2-7B-shaped model with the "
        "unsloth and peft backends; tokens/s and peak VRAM (torch max_memory_reserved).",
        epilog="Example: python -m benchmarks.gpu_train_llama2 --seq-len 2048 --batch-size 4 --steps 20",
    )
    p.add_argument("--steps", type=int, default=20, help="training steps per backend (default: 20)")
    p.add_argument(
        "--warmup-steps", type=int, default=3, help="first steps left out of the timing (default: 3)"
    )
    p.add_argument(
        "--seq-len", type=int, default=2048, help="tokens per sequence, e.g. 2048 or 1024 (default: 2048)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="sequences per step (default: 4)")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (default: 8)")
    p.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha (default: 16)")
    p.add_argument(
        "--lora-dropout",
        type=float,
        choices=[0.0, 0.05],
        default=0.0,
        help="LoRA dropout; 0 lets Unsloth use its fused LoRA kernels (default: 0)",
    )
    p.add_argument(
        "--no-gradient-checkpointing",
        dest="gradient_checkpointing",
        action="store_false",
        help="train without gradient checkpointing (more VRAM)",
    )
    p.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, from {', '.join(BACKENDS)} (default: both)",
    )
    p.add_argument(
        "--seed", type=int, default=42, help="seed of the weights and the token sequences (default: 42)"
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="where the random checkpoint is built (reused if present); default: a temporary folder, deleted",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results JSON (default: benchmarks/results/gpu_train_llama2-<ts>.json)",
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds per child process (default: 3600)")
    p.add_argument("--child", choices=["build", *BACKENDS], help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return p


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "lora_dropout": args.lora_dropout,
        "gradient_checkpointing": args.gradient_checkpointing,
        "seed": args.seed,
    }


def _passthrough(args: argparse.Namespace, model_dir: Path) -> list[str]:
    """The parent's options as a child process's command line."""
    return [
        f"--steps={args.steps}",
        f"--warmup-steps={args.warmup_steps}",
        f"--seq-len={args.seq_len}",
        f"--batch-size={args.batch_size}",
        f"--lora-r={args.lora_r}",
        f"--lora-alpha={args.lora_alpha}",
        f"--lora-dropout={args.lora_dropout}",
        f"--seed={args.seed}",
        f"--model-dir={model_dir}",
        *([] if args.gradient_checkpointing else ["--no-gradient-checkpointing"]),
    ]


def _run_children(args: argparse.Namespace, backends: list[str]) -> list[dict[str, Any]] | None:
    """Build the checkpoint (unless present), then train each backend in its own process; None when
    the build failed."""
    keep = args.model_dir is not None
    model_dir = args.model_dir or Path(tempfile.mkdtemp(prefix="llama2-7b-random-")) / "model"
    scratch = Path(tempfile.mkdtemp(prefix="gpu-train-"))
    passthrough = _passthrough(args, model_dir)
    results = []
    try:
        if not (model_dir / "config.json").exists():
            print(f"building the random Llama-2-7B-shaped checkpoint in {model_dir} ...", file=sys.stderr)
            built = _child(["--child=build", *passthrough], scratch / "build.json", args.timeout)
            if built["status"] != "ok":
                print(f"error: building the model failed: {built}", file=sys.stderr)
                return None
        for backend in backends:
            print(f"{backend}: loading in 4-bit and training {args.steps} steps ...", file=sys.stderr)
            one = _child([f"--child={backend}", *passthrough], scratch / f"{backend}.json", args.timeout)
            results.append({"backend": backend, **one} if one["status"] != "ok" else {**one, "status": "ok"})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not keep:
            shutil.rmtree(model_dir.parent, ignore_errors=True)
    return results


def _report(opts: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The results JSON: settings, environment, each backend's numbers and its speed-up over peft."""
    peft = next((r for r in results if r["backend"] == "peft" and r["status"] == "ok"), None)
    for r in results:
        if r["status"] == "ok" and peft:
            r["speedup_vs_peft"] = round(r["tokens_per_s"] / peft["tokens_per_s"], 3)
    return {
        "benchmark": "gpu_train_llama2",
        "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m benchmarks.gpu_train_llama2 " + " ".join(sys.argv[1:]),
        "environment": environment(),
        "settings": {**opts, "model_shape": LLAMA2_7B_SHAPE, "quantization": "4-bit NF4 (bitsandbytes)"},
        "published_reference": PUBLISHED_A100_4BIT,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or any(b not in BACKENDS for b in backends):
        print(
            f"error: --backends takes names from {', '.join(BACKENDS)}, got {args.backends!r}",
            file=sys.stderr,
        )
        return 2
    if not cuda_available():
        print(NO_GPU_MESSAGE, file=sys.stderr)
        return 2
    opts = _options(args)
    if args.child:
        if args.child == "build":
            result = build_model(args.model_dir, args.seed)
        else:
            result = train_backend(args.child, args.model_dir, opts)
        write_json(args.child_out, result)
        return 0

    results = _run_children(args, backends)
    if results is None:
        return 1
    report = _report(opts, results)
    out = (
        args.out or ROOT / "benchmarks" / "results" / f"gpu_train_llama2-{datetime.now():%Y%m%d-%H%M%S}.json"
    )
    write_json(out, report)
    print_table(report)
    print(f"Results: {out}")
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
