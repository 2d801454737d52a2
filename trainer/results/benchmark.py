"""Typed result of the benchmark stage: benchmark.json (also the JSON `python -m benchmarks` writes).

Part of the run folder contract (`trainer.results`, docs/ARTIFACTS.md); stdlib only, reads and writes
nothing. Fields are declared in the order the benchmark writes its keys (benchmarks/runner.py,
benchmarks/metrics.py, the engines under benchmarks/engines/), so that `to_dict` keeps the file's
key order; a key only one engine writes is simply absent for the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from trainer.results.base import ABSENT, NotMeasured, OptNum, OptStr, Reason, Record, StageResult


@dataclass(kw_only=True)
class ModelArch(Record):
    """What the roofline needs to know about the model."""

    params: OptNum = ABSENT
    weight_bytes: OptNum = ABSENT
    weight_bytes_source: OptStr = ABSENT  # GGUF tensor bytes | Ollama's file size | parameter bytes
    kv_bytes_per_position: OptNum = ABSENT


@dataclass(kw_only=True)
class EngineDetails(Record):
    """How the engine served the model: llama.cpp (native llama-server or llama-cpp-python's
    server), Ollama or transformers in-process; each engine writes only its own keys."""

    file_type: Any = ABSENT  # GGUF general.file_type (llama.cpp, Ollama)
    gguf: dict[str, Any] | NotMeasured = ABSENT  # llama.cpp: the GGUF header (trainer.gguf_info)
    server_command: OptStr = ABSENT  # llama.cpp
    server_pid: OptNum = ABSENT
    server_log: OptStr = ABSENT
    server_startup_s: OptNum = ABSENT
    server: OptStr = ABSENT  # "native" llama-server | "python" llama-cpp-python
    server_reason: OptStr = ABSENT
    server_parallel_slots: OptNum = ABSENT
    llama_server_version: OptStr = ABSENT
    llama_cpp_python: OptStr = ABSENT
    server_version: OptStr = ABSENT  # Ollama
    host: OptStr = ABSENT
    prompt_mode: OptStr = ABSENT
    loaded_from: OptStr = ABSENT  # transformers
    load_s: OptNum = ABSENT
    fixed_length: OptStr = ABSENT  # whether every answer runs to max_tokens, and how
    device: OptStr = ABSENT  # cpu | gpu | cuda
    arch: ModelArch | NotMeasured = ABSENT


@dataclass(kw_only=True)
class BenchSettings(Record):
    """The benchmark.* settings the run used, and why this engine."""

    engine: OptStr = ABSENT
    engine_reason: OptStr = ABSENT
    engine_code: Reason | NotMeasured = ABSENT  # the same reason as a code (run.py benchmark only)
    model: OptStr = ABSENT
    concurrency: list[int] | NotMeasured = ABSENT
    num_requests: OptNum = ABSENT
    repetitions: OptNum = ABSENT
    max_tokens: OptNum = ABSENT
    num_ctx: OptNum = ABSENT
    threads: OptNum = ABSENT
    threads_reason: OptStr = ABSENT
    warmup_requests: OptNum = ABSENT
    request_timeout_s: OptNum = ABSENT
    max_duration_s: OptNum = ABSENT
    temperature: OptNum = ABSENT
    seed: OptNum = ABSENT
    host: OptStr = ABSENT  # the Ollama host
    llamacpp_server: OptStr = ABSENT  # benchmark.llamacpp_server: auto | native | python
    prompt_format: OptStr = ABSENT
    prompt_format_source: OptStr = ABSENT
    prompts: dict[str, Any] | NotMeasured = ABSENT


@dataclass(kw_only=True)
class Percentiles(Record):
    mean: OptNum = ABSENT
    p50: OptNum = ABSENT
    p90: OptNum = ABSENT
    p99: OptNum = ABSENT


@dataclass(kw_only=True)
class LevelSummary(Record):
    """One concurrency level (all repetitions); a missing value carries its `<key>_reason` beside it."""

    concurrency: OptNum = ABSENT
    requests: OptNum = ABSENT
    completed: OptNum = ABSENT
    failures: OptNum = ABSENT
    ttft_ms: Percentiles | NotMeasured = ABSENT
    tpot_ms: Percentiles | NotMeasured = ABSENT
    itl_ms: Percentiles | NotMeasured = ABSENT
    e2e_ms: Percentiles | NotMeasured = ABSENT
    decode_tokens_per_s: OptNum = ABSENT  # mean per request
    prompt_tokens_per_s: OptNum = ABSENT  # mean per request
    output_tokens_total: OptNum = ABSENT
    output_tokens_mean: OptNum = ABSENT
    prompt_tokens_mean: OptNum = ABSENT
    wall_s: OptNum = ABSENT  # summed over the repetitions, first send to last completion
    aggregate_tokens_per_s: OptNum = ABSENT
    requests_per_s: OptNum = ABSENT
    server_decode_tokens_per_s: OptNum = ABSENT  # the server's own timings, where it reports them
    server_prompt_tokens_per_s: OptNum = ABSENT
    reason: OptStr = ABSENT  # no request of the level succeeded
    decode_tokens_per_s_reason: OptStr = ABSENT


@dataclass(kw_only=True)
class BenchMemory(Record):
    """Peak memory of the serving process (RSS) and of the GPU, and how each was measured."""

    server_peak_rss_bytes: OptNum = ABSENT
    server_peak_rss_reason: OptStr = ABSENT
    rss_method: OptStr = ABSENT
    vram_bytes: OptNum = ABSENT
    vram_method: OptStr = ABSENT
    vram_reason: OptStr = ABSENT
    ollama_size_bytes: OptNum = ABSENT  # Ollama /api/ps size
    ollama_context_length: OptNum = ABSENT


@dataclass(kw_only=True)
class Roofline(Record):
    """The decode speed limit (memory bandwidth or compute) and the share of it the run reached."""

    bandwidth_bytes_per_s: OptNum = ABSENT
    bytes_per_token: OptNum = ABSENT
    memory_limit_tokens_per_s: OptNum = ABSENT
    peak_flops_per_s: OptNum = ABSENT
    params: OptNum = ABSENT
    compute_limit_tokens_per_s: OptNum = ABSENT
    limit_tokens_per_s: OptNum = ABSENT
    bound: OptStr = ABSENT  # memory | compute
    achieved_tokens_per_s: OptNum = ABSENT
    achieved_fraction: OptNum = ABSENT
    achieved_source: OptStr = ABSENT
    weight_bytes: OptNum = ABSENT
    weight_bytes_source: OptStr = ABSENT
    kv_bytes_per_position: OptNum = ABSENT
    context_tokens: OptNum = ABSENT  # mean context while decoding: the prompt plus half the answer
    device: OptStr = ABSENT
    threads: OptNum = ABSENT
    bandwidth_method: OptStr = ABSENT
    peak_flops_method: OptStr = ABSENT
    machine_samples: list[dict[str, Any]] | NotMeasured = ABSENT  # each measurement of the machine
    machine_samples_note: OptStr = ABSENT
    copy_bandwidth_bytes_per_s: OptNum = ABSENT  # for reference: read + write bandwidth
    copy_bandwidth_method: OptStr = ABSENT
    copy_memory_limit_tokens_per_s: OptNum = ABSENT
    achieved_fraction_of_copy_limit: OptNum = ABSENT
    reason: OptStr = ABSENT  # why no limit


@dataclass(kw_only=True)
class TimingPair(Record):
    requests: OptNum = ABSENT
    client_mean: OptNum = ABSENT
    server_mean: OptNum = ABSENT
    difference: OptNum = ABSENT
    worst_request_difference: OptNum = ABSENT


@dataclass(kw_only=True)
class TimingAgreement(Record):
    concurrency: OptNum = ABSENT
    requests: OptNum = ABSENT
    first_chunk_tokens_mean: OptNum = ABSENT
    ttft_ms: TimingPair | NotMeasured = ABSENT
    decode_tokens_per_s: TimingPair | NotMeasured = ABSENT
    reason: OptStr = ABSENT


@dataclass(kw_only=True)
class BenchFiles(Record):
    """Files written beside the results, relative to the run folder (`python -m benchmarks`: as given)."""

    json: OptStr = ABSENT  # `python -m benchmarks` only
    csv: OptStr = ABSENT
    charts: list[str] | NotMeasured = ABSENT
    server_log: OptStr = ABSENT  # llama.cpp


@dataclass(kw_only=True)
class BenchmarkResult(StageResult):
    engine: OptStr = ABSENT
    model: OptStr = ABSENT
    model_size_bytes: OptNum = ABSENT
    quantization: OptStr = ABSENT
    engine_details: EngineDetails | NotMeasured = ABSENT
    settings: BenchSettings | NotMeasured = ABSENT
    summary: list[LevelSummary] | NotMeasured = ABSENT
    memory: BenchMemory | NotMeasured = ABSENT
    roofline: Roofline | NotMeasured = ABSENT
    timing_agreement: TimingAgreement | NotMeasured = ABSENT
    sanity: dict[str, Any] | NotMeasured = ABSENT  # the sanity request's sample (as in `samples`)
    requests_total: OptNum = ABSENT
    failures_total: OptNum = ABSENT
    partial: bool | NotMeasured = ABSENT
    partial_reason: OptStr = ABSENT
    duration_s: OptNum = ABSENT  # engine start to stop
    machine_load: dict[str, Any] | NotMeasured = ABSENT  # loadavg and busy cores before and after
    samples: list[dict[str, Any]] | NotMeasured = ABSENT  # one per request, as measured
    files: BenchFiles | NotMeasured = ABSENT
    # The benchmark writes its notes before its headline, and the stage adds `files` last.
    trailing_keys: ClassVar[tuple[str, ...]] = ("notes", "headline", "files")
