"""Shared records of the benchmark: its settings, one request, one request's raw timings, and the
interface every engine (Ollama, llama.cpp server, in-process transformers) implements.

Used by `python -m benchmarks` and `python run.py benchmark`; reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchmarks.prompts import PromptSet
from trainer.config import BenchmarkConfig
from trainer.prompt_format import PromptFormat
from trainer.results import Reason

# The pipeline's benchmark defaults (configs/*.yaml `benchmark:`) are the defaults here too, so
# `python -m benchmarks` and `python run.py benchmark` measure the same load unless told otherwise.
_DEFAULTS = BenchmarkConfig()


@dataclass
class BenchSettings:
    # Engine name ("ollama", "llamacpp", "transformers") after resolving "auto", and why.
    engine: str
    engine_reason: str
    # A .gguf file (llamacpp), an Ollama model name (ollama), or an HF folder / .gguf (transformers).
    model: str
    prompts: PromptSet
    # None: send the bare question (Ollama applies its own template).
    prompt_format: PromptFormat | None
    prompt_format_source: str
    concurrency: list[int] = field(default_factory=lambda: list(_DEFAULTS.concurrency))
    num_requests: int = _DEFAULTS.num_requests
    repetitions: int = 1
    max_tokens: int = _DEFAULTS.max_tokens
    num_ctx: int = _DEFAULTS.num_ctx
    # Resolved: BenchmarkConfig's 0 ("free cores") is turned into a count before a run.
    threads: int = 1
    threads_reason: str = ""
    warmup_requests: int = _DEFAULTS.warmup_requests
    request_timeout_s: float = _DEFAULTS.request_timeout_s
    # Stop sending new requests after this long (the run is then marked partial).
    max_duration_s: float = 1800.0
    startup_timeout_s: float = 120.0
    seed: int = 42
    # Ollama server URL.
    host: str | None = None
    # llama.cpp server port on 127.0.0.1; 0 picks a free one.
    port: int = 0
    # llama.cpp layers offloaded to a GPU (-1: all; ignored by CPU-only builds).
    n_gpu_layers: int = -1
    # A local GGUF of the same model, for quantization and the roofline when the engine is Ollama.
    gguf_path: str | None = None
    # llama.cpp server: "auto" (native llama-server when installed), "native" or "python".
    llamacpp_server: str = _DEFAULTS.llamacpp_server
    # Where the llama.cpp server's own log goes (None: a temporary file).
    server_log: Path | None = None
    measure_roofline: bool = True
    # engine_reason as a code (benchmarks/pipeline.py), for the report; None outside the pipeline.
    engine_code: Reason | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "engine_reason": self.engine_reason,
            **({"engine_code": self.engine_code.to_dict()} if self.engine_code else {}),
            "model": self.model,
            "concurrency": list(self.concurrency),
            "num_requests": self.num_requests,
            "repetitions": self.repetitions,
            "max_tokens": self.max_tokens,
            "num_ctx": self.num_ctx,
            "threads": self.threads,
            "threads_reason": self.threads_reason,
            "warmup_requests": self.warmup_requests,
            "request_timeout_s": self.request_timeout_s,
            "max_duration_s": self.max_duration_s,
            "temperature": 0.0,
            "seed": self.seed,
            "host": self.host,
            "llamacpp_server": self.llamacpp_server,
            "prompt_format": self.prompt_format.name if self.prompt_format else None,
            "prompt_format_source": self.prompt_format_source,
            "prompts": self.prompts.describe(),
        }


@dataclass
class RequestSpec:
    number: int  # unique within the invocation; part of the cache-busting tag
    phase: str  # sanity | warmup | measured
    prompt_id: str
    question: str
    text: str  # the full prompt text for raw-completion engines
    tag: str
    max_tokens: int
    timeout_s: float
    seed: int


@dataclass
class RawResult:
    """What an engine observed for one request; all times are time.perf_counter() seconds."""

    ok: bool
    start_s: float
    end_s: float
    first_token_s: float | None = None
    chunk_times_s: list[float] = field(default_factory=list)
    text: str = ""
    output_tokens: int | None = None
    # How output_tokens was known: "server" (Ollama eval_count), "max_tokens" (llama.cpp stopped
    # at the length limit), "generated_ids" (transformers), "retokenized" (text tokenized again).
    output_tokens_source: str | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    # Tokens in the first streamed chunk, where the server says (a character split over several
    # byte-level tokens is sent once complete, so the first text can come a few tokens late).
    first_chunk_tokens: int | None = None
    server: dict[str, Any] | None = None
    error: str | None = None


class Engine(Protocol):
    name: str

    def describe(self) -> dict[str, Any]:
        """model, model_size_bytes, quantization, fixed_length, and `arch` for the roofline."""
        ...

    def count_tokens(self, text: str) -> int | None: ...

    def generate(self, req: RequestSpec) -> RawResult:
        """One streamed request. Never raises: a failure is RawResult(ok=False, error=...)."""
        ...

    def alive(self) -> bool: ...

    def memory(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
