"""Serving engines of the benchmark, a name -> function table (heavy imports inside each function).

    ollama        a running Ollama server (native /api/generate, streaming NDJSON)
    llamacpp      llama.cpp's llama-server (or llama-cpp-python's server), started and stopped by the
                  benchmark on 127.0.0.1
    transformers  the Hugging Face model in-process (the unexported baseline)

Each function takes `BenchSettings` and returns a started engine (see `benchmarks.spec.Engine`)
or raises `UserError` with what to fix. Used by `python -m benchmarks` and `python run.py benchmark`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchmarks.spec import BenchSettings, Engine


def _ollama(settings: BenchSettings) -> Engine:
    from benchmarks.engines.ollama import open_engine

    return open_engine(settings)


def _llamacpp(settings: BenchSettings) -> Engine:
    from benchmarks.engines.llamacpp import open_engine

    return open_engine(settings)


def _transformers(settings: BenchSettings) -> Engine:
    from benchmarks.engines.hf import open_engine

    return open_engine(settings)


ENGINES: dict[str, Callable[[BenchSettings], Engine]] = {
    "ollama": _ollama,
    "llamacpp": _llamacpp,
    "transformers": _transformers,
}


def open_engine(settings: BenchSettings) -> Engine:
    return ENGINES[settings.engine](settings)


def resolve_auto(model: str, host: str) -> tuple[str, str]:
    """Engine for `--engine auto` from what `--model` is: a folder -> transformers, a .gguf file ->
    llama.cpp, anything else is an Ollama model name (Ollama must answer)."""
    from trainer.ollama_client import answers

    path = Path(model)
    if path.is_dir():
        return "transformers", f"{model} is a folder: in-process transformers"
    if path.is_file():
        return "llamacpp", f"{model} is a file: llama.cpp server"
    if answers(host):
        return "ollama", f"{model} is not a file and Ollama answers at {host}"
    return "ollama", f"{model} is not a file: an Ollama model name (Ollama did not answer at {host})"
