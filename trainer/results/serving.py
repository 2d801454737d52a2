"""Typed results of the serving half of the pipeline: export.json, deploy.json, report.json (benchmark.json: benchmark.py).

Part of the run folder contract (`trainer.results`, docs/ARTIFACTS.md); stdlib only, reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from trainer.results.base import ABSENT, NotMeasured, OptNum, OptStr, Reason, Record, StageResult

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
class PromptTokens(Record):
    """The prompt token ids Ollama fed the model (the first `prompt_eval_count` entries of `context`
    in its final answer object) against the training prompt tokenized by the exported model's
    tokenizer: equal ids prove the TEMPLATE, whatever the answers' numerics."""

    status: OptStr = ABSENT  # verified | failed | not_checked
    expected_tokens: OptNum = ABSENT  # the training prompt's token count
    ollama_tokens: OptNum = ABSENT
    matching_tokens: OptNum = ABSENT  # leading tokens that agree
    first_difference: OptNum = ABSENT  # 0-based token position; null when equal
    expected_around: OptStr = ABSENT  # both sides decoded around the first difference
    ollama_around: OptStr = ABSENT
    reason: OptStr = ABSENT  # why not checked


@dataclass(kw_only=True)
class ApiCase(Record):
    """One held-back test prompt sent to Ollama's /api/generate, and what came back."""

    id: Any = ABSENT
    prompt: OptStr = ABSENT
    answer: OptStr = ABSENT
    done_reason: OptStr = ABSENT
    eval_count: OptNum = ABSENT
    decode_tokens_per_s: OptNum = ABSENT
    ttft_ms: OptNum = ABSENT
    ok: bool | NotMeasured = ABSENT  # the request completed with a non-empty answer
    problems: list[str] | NotMeasured = ABSENT  # codes: request_failed, empty_answer
    # Codes of what the model did that is not a deployment fault by itself: at_limit (ran to
    # num_predict), no_chinese. The set-level checks in ApiTest judge them.
    observations: list[str] | NotMeasured = ABSENT
    error: OptStr = ABSENT  # Ollama's error text when the request failed
    prompt_tokens: PromptTokens | NotMeasured = ABSENT


@dataclass(kw_only=True)
class TemplateCheck(Record):
    """The template proof over every case whose answer carried `context`."""

    status: OptStr = ABSENT  # verified | failed | not_checked
    cases_checked: OptNum = ABSENT
    matching_tokens: OptNum = ABSENT  # summed over the checked cases
    expected_tokens: OptNum = ABSENT
    case: OptNum = ABSENT  # 1-based: the case that failed, else the first one checked
    request: OptStr = ABSENT  # which request gave the ids that decided
    reason: OptStr = ABSENT  # why not checked


@dataclass(kw_only=True)
class StopCheck(Record):
    """Do answers end by a stop? Judged on the set: one answer at the limit is the model's behaviour,
    every answer at the limit means no stop marker was reached."""

    status: OptStr = ABSENT  # passed | failed | not_checked
    stopped: OptNum = ABSENT  # answers that ended by a stop (done_reason "stop")
    at_limit: OptNum = ABSENT  # answers that ran to num_predict (done_reason "length")
    at_limit_cases: list[Any] | NotMeasured = ABSENT  # ids of those answers


@dataclass(kw_only=True)
class LlamacppComparison(Record):
    """The first test prompt answered by llama.cpp directly, beside Ollama's answer: information, not
    a verdict (greedy answers differ with the build, threads and warm-up; the prompt tokens prove the
    template)."""

    prompt: OptStr = ABSENT  # the training prompt text (PromptFormat.prompt)
    ollama_answer: OptStr = ABSENT
    llamacpp_answer: OptStr = ABSENT  # null: llama.cpp was not asked (see reason)
    llamacpp_finish_reason: OptStr = ABSENT
    matches_llamacpp: bool | NotMeasured = ABSENT  # same answer text; null: not compared (see reason)
    prompt_tokens_equal: bool | NotMeasured = ABSENT  # llama.cpp's prompt ids == Ollama's
    agreeing_tokens: OptNum = ABSENT  # leading answer tokens that agree
    ollama_answer_tokens: OptNum = ABSENT
    llamacpp_answer_tokens: OptNum = ABSENT
    parted_ollama: OptStr = ABSENT  # each side's text from where they part
    parted_llamacpp: OptStr = ABSENT
    # identical | numeric_divergence (same prompt tokens, answers part) | prompt_differs | unknown
    interpretation: OptStr = ABSENT
    reason: OptStr = ABSENT  # why no comparison was made


@dataclass(kw_only=True)
class ApiTest(Record):
    status: OptStr = ABSENT  # passed | failed | inconclusive (template not checked) | not_run
    reason: OptStr = ABSENT  # why not run
    options: dict[str, Any] | NotMeasured = ABSENT  # the /api/generate options of every case
    cases: list[ApiCase] | NotMeasured = ABSENT
    # codes: template_mismatch, no_stop, request_failed, empty_answer, no_chinese
    failures: list[str] | NotMeasured = ABSENT
    template: TemplateCheck | NotMeasured = ABSENT
    stops: StopCheck | NotMeasured = ABSENT
    matches_llamacpp: bool | NotMeasured = ABSENT
    llamacpp: LlamacppComparison | NotMeasured = ABSENT


@dataclass(kw_only=True)
class LoadedModel(Record):
    """The deployed model as Ollama holds it in memory after the API test (GET /api/ps)."""

    size_bytes: OptNum = ABSENT
    size_vram_bytes: OptNum = ABSENT
    context_length: OptNum = ABSENT
    quantization: OptStr = ABSENT


@dataclass(kw_only=True)
class DeployResult(StageResult):
    status: OptStr = ABSENT  # deployed | not_deployed | failed
    host: OptStr = ABSENT
    model_name: OptStr = ABSENT
    reason: OptStr = ABSENT  # why not deployed; null when deployed
    reason_code: Reason | NotMeasured = (
        ABSENT  # the same as a code (no_ollama | ollama_error); absent: deployed
    )
    deploy_command: OptStr = ABSENT  # the `ollama create` command that does the same by hand
    ollama_version: OptStr = ABSENT
    blob: OptStr = ABSENT  # the GGUF blob's digest on the server
    modelfile: OptStr = ABSENT
    parameters: dict[str, Any] | NotMeasured = ABSENT  # the Modelfile's PARAMETERs
    api_test: ApiTest | NotMeasured = ABSENT
    loaded: LoadedModel | NotMeasured = ABSENT  # null: not known (see loaded_reason)
    loaded_reason: OptStr = ABSENT


# ---- report.json ----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ReportResult(StageResult):
    files: dict[str, str] | NotMeasured = ABSENT  # md, pdf (each when written), assets
    missing_glyphs: OptNum = ABSENT
    replaced_glyphs: list[str] | NotMeasured = ABSENT  # "U+XXXX" of characters no font had
    pdf_warnings: list[str] | NotMeasured = ABSENT
    pages: OptNum = ABSENT  # 0 when no PDF was written
    render_s: OptNum = ABSENT
    # The report writes `files`, then its headline and notes, then the PDF figures.
    trailing_keys: ClassVar[tuple[str, ...]] = (
        "headline",
        "notes",
        "missing_glyphs",
        "replaced_glyphs",
        "pdf_warnings",
        "pages",
        "render_s",
    )
