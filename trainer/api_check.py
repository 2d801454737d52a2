"""The deploy stage's API test (`python run.py deploy`, trainer/deploy.py): held-back test prompts
through Ollama's /api/generate, judged only on what the answers can prove.

Reads and writes nothing itself; `run` returns the `ApiTest` that goes into deploy.json.

- Template: the prompt token ids Ollama fed the model (the first `prompt_eval_count` entries of
  `context` in the final answer object) against the training prompt (`PromptFormat.prompt`, the
  text the model was trained to answer) tokenized by the exported model's tokenizer, as training
  tokenizes it. Equal in every case: verified, N/N tokens. Different: failed, with the first
  differing position and both sides decoded around it.
- Stops, on the whole set: passed when at least one answer ended by a stop; every answer at
  `num_predict` is "no stop marker reached"; single answers at the limit are the model's behaviour
  (observation `at_limit`). Likewise at least one answer must contain Chinese (`no_chinese`).
- A request that fails (HTTP error, a stream cut short, a time-out) is recorded in its case with
  Ollama's error text (`request_failed`), and the test goes on with the next case.
- llama.cpp, run in-process on the same GGUF with the training prompt at temperature 0, answers
  the first prompt too: information only. Greedy answers differ between builds, thread counts and
  even a first and a warm request, so the comparison records how many leading tokens agree and
  calls a parting "numeric divergence" when the prompt tokens are proven equal.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from trainer import gguf_generate, ollama_client
from trainer.config import PipelineConfig
from trainer.prompt_format import PromptFormat
from trainer.results import (
    ApiCase,
    ApiTest,
    LlamacppComparison,
    NotMeasured,
    PromptTokens,
    StopCheck,
    TemplateCheck,
    or_not_measured,
)

# CJK Unified Ideographs and Extension A: "the answer is Chinese".
_CHINESE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
# Tokens shown on each side of the first differing prompt token; characters after a parting.
_AROUND_TOKENS = 8
_PARTED_CHARS = 40
ENDPOINT = "POST /api/generate"


def run(
    cfg: PipelineConfig,
    fmt: PromptFormat,
    host: str,
    name: str,
    gguf_path: Path,
    num_ctx: int,
    records: list[dict[str, Any]],
    tokenizer: Any,
    notes: list[str],
) -> ApiTest:
    """Ask `name` at `host` the test `records`; `tokenizer` is the exported model's, or the reason
    (a str) it could not be loaded."""
    # Plain greedy decoding at temperature 0 on both sides: Ollama may otherwise apply its default
    # repeat penalty, which llama.cpp's completion call does not.
    options = {
        "temperature": cfg.deploy.temperature,
        "num_predict": cfg.deploy.num_predict,
        "num_ctx": num_ctx,
        "repeat_penalty": 1.0,
    }
    cases: list[ApiCase] = []
    generations: list[ollama_client.Generation | None] = []
    for record in records:
        user = fmt.user_text(record["instruction"], record.get("input", ""))
        try:
            gen = ollama_client.generate(host, name, user, options, timeout_s=cfg.deploy.timeout_s)
        except ollama_client.OllamaError as exc:
            error = str(exc).split("\n")[0]
            notes.append(f"case {record.get('id')}: {error}")
            cases.append(_failed_case(record, user, exc, error))
            generations.append(None)
            continue
        expected = fmt.prompt(record["instruction"], record.get("input", ""))
        cases.append(_case(record, user, gen, _prompt_tokens(tokenizer, expected, gen)))
        generations.append(gen)

    template, stops = _template_check(cases), _stop_check(cases)
    comparison = _compare_with_llamacpp(cfg, fmt, gguf_path, records[0], generations[0], num_ctx, template)
    if isinstance(comparison.reason, str):
        notes.append(f"llama.cpp comparison not made: {comparison.reason}")
    failures = _failures(cases, template, stops)
    status = "failed" if failures else "passed" if template.status == "verified" else "inconclusive"
    return ApiTest(
        status=status,
        options=options,
        cases=cases,
        failures=failures,
        template=template,
        stops=stops,
        matches_llamacpp=comparison.matches_llamacpp,
        llamacpp=comparison,
    )


def _failed_case(record: dict[str, Any], user: str, exc: Exception, error: str) -> ApiCase:
    partial = getattr(exc, "text", "")
    return ApiCase(
        id=record.get("id"),
        prompt=user,
        answer=partial,
        done_reason=NotMeasured("request_failed"),
        eval_count=NotMeasured("request_failed"),
        decode_tokens_per_s=NotMeasured("request_failed"),
        ttft_ms=NotMeasured("request_failed"),
        ok=False,
        problems=["request_failed"],
        observations=[],
        error=error,
        prompt_tokens=PromptTokens(status="not_checked", reason="request_failed"),
    )


def _case(
    record: dict[str, Any], user: str, gen: ollama_client.Generation, prompt_tokens: PromptTokens
) -> ApiCase:
    problems = [] if gen.text.strip() else ["empty_answer"]
    observations = []
    if gen.done_reason == "length":
        observations.append("at_limit")
    if gen.text.strip() and not _CHINESE.search(gen.text):
        observations.append("no_chinese")
    return ApiCase(
        id=record.get("id"),
        prompt=user,
        answer=gen.text,
        done_reason=or_not_measured(gen.done_reason),
        eval_count=or_not_measured(gen.eval_count),
        decode_tokens_per_s=or_not_measured(gen.decode_tokens_per_s),
        ttft_ms=NotMeasured() if gen.ttft_s is None else round(gen.ttft_s * 1000, 1),
        ok=not problems,
        problems=problems,
        observations=observations,
        error=NotMeasured(),  # null: the request completed
        prompt_tokens=prompt_tokens,
    )


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def training_prompt_ids(tokenizer: Any, prompt_text: str) -> list[int]:
    """The token ids training gives the prompt: the tokenizer's call on the prompt text, special
    tokens (BOS where the tokenizer adds one) included, as trainer.recipe.tokenize_conversation
    tokenizes a conversation's first piece."""
    return list(tokenizer(prompt_text)["input_ids"])


def _prompt_tokens(tokenizer: Any, prompt_text: str, gen: ollama_client.Generation) -> PromptTokens:
    if isinstance(tokenizer, str):
        return PromptTokens(status="not_checked", reason=f"no_tokenizer: {tokenizer}")
    got = gen.prompt_ids
    if got is None:
        return PromptTokens(status="not_checked", reason="no_context")
    expected = training_prompt_ids(tokenizer, prompt_text)
    same = 0
    while same < min(len(expected), len(got)) and expected[same] == got[same]:
        same += 1
    if same == len(expected) == len(got):
        return PromptTokens(
            status="verified",
            expected_tokens=len(expected),
            ollama_tokens=len(got),
            matching_tokens=same,
            first_difference=NotMeasured(),  # null: none
        )
    lo, hi = max(0, same - _AROUND_TOKENS), same + _AROUND_TOKENS
    return PromptTokens(
        status="failed",
        expected_tokens=len(expected),
        ollama_tokens=len(got),
        matching_tokens=same,
        first_difference=same,
        expected_around=_decode(tokenizer, expected[lo:hi]),
        ollama_around=_decode(tokenizer, got[lo:hi]),
    )


def _template_check(cases: list[ApiCase]) -> TemplateCheck:
    tokens = enumerate((c.prompt_tokens for c in cases), start=1)
    checked = [(n, p) for n, p in tokens if p.status in ("verified", "failed")]
    if not checked:
        reasons = [str(c.prompt_tokens.reason) for c in cases if c.prompt_tokens.reason]
        return TemplateCheck(
            status="not_checked", cases_checked=0, reason=reasons[0] if reasons else "no_cases"
        )
    failed = [(n, p) for n, p in checked if p.status == "failed"]
    n = (failed or checked)[0][0]
    return TemplateCheck(
        status="failed" if failed else "verified",
        cases_checked=len(checked),
        matching_tokens=sum(p.matching_tokens for _, p in checked),
        expected_tokens=sum(p.expected_tokens for _, p in checked),
        case=n,
        request=ENDPOINT,
        reason=NotMeasured(),  # null: checked
    )


def _stop_check(cases: list[ApiCase]) -> StopCheck:
    answered = [c for c in cases if "request_failed" not in c.problems]
    if not answered:
        return StopCheck(status="not_checked", stopped=0, at_limit=0, at_limit_cases=[])
    stopped = sum(1 for c in answered if c.done_reason == "stop")
    at_limit = [c.id for c in answered if c.done_reason == "length"]
    return StopCheck(
        status="passed" if stopped else "failed",
        stopped=stopped,
        at_limit=len(at_limit),
        at_limit_cases=at_limit,
    )


def _failures(cases: list[ApiCase], template: TemplateCheck, stops: StopCheck) -> list[str]:
    failures = []
    if template.status == "failed":
        failures.append("template_mismatch")
    if any("request_failed" in c.problems for c in cases):
        failures.append("request_failed")
    if any("empty_answer" in c.problems for c in cases):
        failures.append("empty_answer")
    if stops.status == "failed":
        failures.append("no_stop")
    answered = [c for c in cases if c.ok]
    if answered and all("no_chinese" in c.observations for c in answered):
        failures.append("no_chinese")
    return failures


def _common_prefix(a: list[Any] | str, b: list[Any] | str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _compare_with_llamacpp(
    cfg: PipelineConfig,
    fmt: PromptFormat,
    gguf_path: Path,
    record: dict[str, Any],
    gen: ollama_client.Generation | None,
    num_ctx: int,
    template: TemplateCheck,
) -> LlamacppComparison:
    prompt_text = fmt.prompt(record["instruction"], record.get("input", ""))
    ollama_answer = gen.text if gen is not None else NotMeasured("request_failed")

    def not_compared(reason: str) -> LlamacppComparison:
        return LlamacppComparison(
            prompt=prompt_text,
            ollama_answer=ollama_answer,
            llamacpp_answer=NotMeasured(reason),
            matches_llamacpp=NotMeasured(reason),
            reason=reason,
        )

    if gen is None:
        return not_compared("Ollama's first request failed")
    if cfg.deploy.temperature != 0:
        return not_compared(
            f"deploy.temperature is {cfg.deploy.temperature}: sampled answers are not comparable"
        )
    # Ollama and llama.cpp both add BOS themselves when the GGUF asks for it, so the plain prompt
    # text is the same input on both sides. In a child process: a llama.cpp crash on this CPU is
    # a recorded reason, not the end of the stage.
    threads = max(1, min(4, (os.cpu_count() or 2) // 2))
    try:
        out = gguf_generate.generate(
            gguf_path,
            prompt_text,
            max_tokens=cfg.deploy.num_predict,
            stop=fmt.stop,
            n_ctx=num_ctx,
            threads=threads,
            timeout_s=cfg.deploy.timeout_s,
        )
    except gguf_generate.GGUFRunError as exc:
        return not_compared(str(exc).split("\n")[0])
    return _comparison(prompt_text, gen, out, template)


def _comparison(
    prompt_text: str, gen: ollama_client.Generation, out: dict[str, Any], template: TemplateCheck
) -> LlamacppComparison:
    answer = str(out["text"])
    same_text = answer.strip() == gen.text.strip()
    prompt_equal: bool | NotMeasured = NotMeasured("Ollama's answer carried no context")
    agreeing: int | NotMeasured = NotMeasured("Ollama's answer carried no context")
    ollama_ids: list[int] | None = None
    if gen.prompt_ids is not None and gen.context is not None:
        prompt_equal = list(out["prompt_ids"]) == gen.prompt_ids
        ollama_ids = gen.context[len(gen.prompt_ids) :]
        agreeing = _common_prefix(ollama_ids, list(out["ids"]))
    if same_text:
        interpretation = "identical"
    elif template.status == "verified" or prompt_equal is True:
        interpretation = "numeric_divergence"
    elif template.status == "failed" or prompt_equal is False:
        interpretation = "prompt_differs"
    else:
        interpretation = "unknown"
    chars = _common_prefix(gen.text, answer)
    return LlamacppComparison(
        prompt=prompt_text,
        ollama_answer=gen.text,
        llamacpp_answer=answer,
        llamacpp_finish_reason=or_not_measured(out["finish_reason"]),
        matches_llamacpp=same_text,
        prompt_tokens_equal=prompt_equal,
        agreeing_tokens=agreeing,
        ollama_answer_tokens=len(ollama_ids) if ollama_ids is not None else or_not_measured(gen.eval_count),
        llamacpp_answer_tokens=len(out["ids"]),
        parted_ollama=NotMeasured() if same_text else gen.text[chars : chars + _PARTED_CHARS],
        parted_llamacpp=NotMeasured() if same_text else answer[chars : chars + _PARTED_CHARS],
        interpretation=interpretation,
        reason=NotMeasured(),  # null: compared
    )
