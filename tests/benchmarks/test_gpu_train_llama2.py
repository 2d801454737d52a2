"""benchmarks/gpu_train_llama2.py needs a CUDA GPU: on CPU it must still import, show --help and say why
it does not run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_train_llama2

ROOT = Path(__file__).resolve().parents[2]


def test_help_runs_without_a_gpu() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_train_llama2", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--steps", "--seq-len", "--batch-size", "--lora-dropout", "--backends", "--out"):
        assert option in done.stdout


def test_without_cuda_it_exits_with_a_clear_message(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(gpu_train_llama2, "cuda_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert gpu_train_llama2.main(["--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "Nothing was run" in err
    assert not out.exists()


def test_model_shape_is_llama2_7b() -> None:
    shape = gpu_train_llama2.LLAMA2_7B_SHAPE
    assert (shape["hidden_size"], shape["num_hidden_layers"], shape["num_attention_heads"]) == (4096, 32, 32)
    assert (shape["intermediate_size"], shape["vocab_size"]) == (11008, 32000)
