"""Typed results of the serving half of the pipeline: export.json, deploy.json, benchmark.json, report.json.

Part of the run folder contract (`trainer.results`, docs/ARTIFACTS.md); stdlib only, reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.results.base import ABSENT, NotMeasured, OptNum, OptStr, Record, StageResult

# ---- export.json ----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ModelFile(Record):
    """A written model: the merged folder or a GGUF file."""

    path: OptStr = ABSENT
    size_bytes: OptNum = ABSENT
    dtype: OptStr = ABSENT
    quantization: OptStr = ABSENT
    file_type: OptStr = ABSENT


@dataclass(kw_only=True)
class GgufVerification(Record):
    architecture: OptStr = ABSENT
    file_type: OptStr = ABSENT
    tensor_count: OptNum = ABSENT
    context_length: OptNum = ABSENT  # the trained context; the check never asks llama.cpp for more
    prompt: OptStr = ABSENT
    generated_text: OptStr = ABSENT
    tokens: OptNum = ABSENT  # export.verify_tokens: the most tokens the check generated


@dataclass(kw_only=True)
class ExportResult(StageResult):
    merged: ModelFile | NotMeasured = ABSENT
    gguf_f16: ModelFile | NotMeasured = ABSENT
    gguf: ModelFile | NotMeasured = ABSENT
    verification: GgufVerification | NotMeasured = ABSENT
    modelfile: OptStr = ABSENT
    llama_cpp_python: OptStr = ABSENT


# ---- deploy.json ----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ApiCase(Record):
    id: Any = ABSENT
    prompt: OptStr = ABSENT
    answer: OptStr = ABSENT
    done_reason: OptStr = ABSENT
    eval_count: OptNum = ABSENT
    decode_tokens_per_s: OptNum = ABSENT
    ttft_ms: OptNum = ABSENT
    ok: bool | NotMeasured = ABSENT
    problems: list[str] | NotMeasured = ABSENT


@dataclass(kw_only=True)
class LlamacppComparison(Record):
    """The same prompt answered by llama.cpp directly, to compare with Ollama's answer."""

    prompt: OptStr = ABSENT
    text: OptStr = ABSENT
    reason: OptStr = ABSENT  # why no comparison was made


@dataclass(kw_only=True)
class ApiTest(Record):
    status: OptStr = ABSENT  # passed | failed | not_run
    reason: OptStr = ABSENT
    cases: list[ApiCase] | NotMeasured = ABSENT
    matches_llamacpp: bool | NotMeasured = ABSENT
    llamacpp: LlamacppComparison | NotMeasured = ABSENT
    options: dict[str, Any] | NotMeasured = ABSENT


@dataclass(kw_only=True)
class DeployResult(StageResult):
    status: OptStr = ABSENT  # deployed | not_deployed | failed
    host: OptStr = ABSENT
    model_name: OptStr = ABSENT
    reason: OptStr = ABSENT
    deploy_command: OptStr = ABSENT
    api_test: ApiTest | NotMeasured = ABSENT
    ollama_version: OptStr = ABSENT
    blob: Any = ABSENT
    modelfile: OptStr = ABSENT
    parameters: Any = ABSENT
    loaded: Any = ABSENT
    loaded_reason: OptStr = ABSENT


# ---- benchmark.json -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Percentiles(Record):
    mean: OptNum = ABSENT
    p50: OptNum = ABSENT
    p90: OptNum = ABSENT
    p99: OptNum = ABSENT


@dataclass(kw_only=True)
class LevelSummary(Record):
    """One concurrency level; a missing value carries its `<key>_reason` beside it."""

    concurrency: OptNum = ABSENT
    requests: OptNum = ABSENT
    completed: OptNum = ABSENT
    failures: OptNum = ABSENT
    ttft_ms: Percentiles | NotMeasured = ABSENT
    tpot_ms: Percentiles | NotMeasured = ABSENT
    itl_ms: Percentiles | NotMeasured = ABSENT
    e2e_ms: Percentiles | NotMeasured = ABSENT
    decode_tokens_per_s: OptNum = ABSENT  # mean per request
    aggregate_tokens_per_s: OptNum = ABSENT
    requests_per_s: OptNum = ABSENT


@dataclass(kw_only=True)
class BenchMemory(Record):
    vram_bytes: OptNum = ABSENT
    server_peak_rss_bytes: OptNum = ABSENT


@dataclass(kw_only=True)
class Roofline(Record):
    bandwidth_bytes_per_s: OptNum = ABSENT
    bytes_per_token: OptNum = ABSENT
    limit_tokens_per_s: OptNum = ABSENT
    achieved_fraction: OptNum = ABSENT
    bound: OptStr = ABSENT  # memory | compute
    peak_flops_per_s: OptNum = ABSENT
    params: OptNum = ABSENT
    reason: OptStr = ABSENT


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
    csv: OptStr = ABSENT
    charts: list[str] | NotMeasured = ABSENT


@dataclass(kw_only=True)
class BenchSettings(Record):
    """The benchmark.* settings the run used, and why this engine."""

    engine: OptStr = ABSENT
    engine_reason: OptStr = ABSENT
    concurrency: list[int] | NotMeasured = ABSENT
    num_requests: OptNum = ABSENT
    repetitions: OptNum = ABSENT
    max_tokens: OptNum = ABSENT
    num_ctx: OptNum = ABSENT
    threads: OptNum = ABSENT
    warmup_requests: OptNum = ABSENT
    request_timeout_s: OptNum = ABSENT
    temperature: OptNum = ABSENT
    seed: OptNum = ABSENT
    prompts: dict[str, Any] | NotMeasured = ABSENT


@dataclass(kw_only=True)
class EngineDetails(Record):
    """llama.cpp only: which server ran and why (other engines add their own keys)."""

    server: OptStr = ABSENT  # "native" llama-server | "python" llama-cpp-python
    server_reason: OptStr = ABSENT
    server_parallel_slots: OptNum = ABSENT
    llama_server_version: OptStr = ABSENT


@dataclass(kw_only=True)
class BenchmarkResult(StageResult):
    engine: OptStr = ABSENT
    model: OptStr = ABSENT
    model_size_bytes: OptNum = ABSENT
    quantization: OptStr = ABSENT
    settings: BenchSettings | NotMeasured = ABSENT
    summary: list[LevelSummary] | NotMeasured = ABSENT
    memory: BenchMemory | NotMeasured = ABSENT
    roofline: Roofline | NotMeasured = ABSENT
    samples: list[dict[str, Any]] | NotMeasured = ABSENT  # one per request, as measured
    partial: bool | NotMeasured = ABSENT
    partial_reason: OptStr = ABSENT
    failures_total: OptNum = ABSENT
    requests_total: OptNum = ABSENT
    engine_details: EngineDetails | NotMeasured = ABSENT
    machine_load: Any = ABSENT
    timing_agreement: TimingAgreement | NotMeasured = ABSENT
    files: BenchFiles | NotMeasured = ABSENT


# ---- report.json ----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ReportResult(StageResult):
    files: dict[str, str] | NotMeasured = ABSENT
    missing_glyphs: OptNum = ABSENT
    replaced_glyphs: list[str] | NotMeasured = ABSENT
    pdf_warnings: list[str] | NotMeasured = ABSENT
    pages: OptNum = ABSENT
    render_s: OptNum = ABSENT
