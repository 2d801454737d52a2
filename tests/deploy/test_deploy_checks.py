"""The API test's verdicts on a set of answers (trainer/api_check.py), and the headline that reads them."""

from __future__ import annotations

import pytest

from trainer.api_check import _case, _failures, _prompt_tokens, _stop_check, _template_check
from trainer.deploy import _verdict
from trainer.ollama_client import Generation
from trainer.results import ApiCase, ApiTest, PromptTokens

VERIFIED = PromptTokens(status="verified", expected_tokens=10, ollama_tokens=10, matching_tokens=10)


def _gen(
    text: str, done_reason: str | None, context: list[int] | None = None, prompt_count: int = 0
) -> Generation:
    return Generation(
        text=text,
        done_reason=done_reason,
        total_duration_ns=None,
        load_duration_ns=None,
        prompt_eval_count=prompt_count if context is not None else None,
        prompt_eval_duration_ns=None,
        eval_count=3,
        eval_duration_ns=1_000_000,
        ttft_s=0.01,
        wall_s=0.02,
        chunks=3,
        context=context,
    )


def _cases(*answers: tuple[str, str]) -> list[ApiCase]:
    return [
        _case({"id": f"t{n}"}, "问", _gen(text, reason), VERIFIED) for n, (text, reason) in enumerate(answers)
    ]


@pytest.mark.parametrize(
    ("answer", "done_reason", "problems", "observations"),
    [
        ("北京是中国的首都。", "stop", [], []),
        ("  ", "stop", ["empty_answer"], []),
        ("Beijing is the capital.", "stop", [], ["no_chinese"]),
        ("北京是中国的首都，北京是", "length", [], ["at_limit"]),
    ],
)
def test_one_answer(answer: str, done_reason: str, problems: list[str], observations: list[str]) -> None:
    case = _case({"id": "t"}, "问", _gen(answer, done_reason), VERIFIED)
    assert (case.problems, case.observations, case.ok) == (problems, observations, not problems)


def test_stops_are_judged_on_the_whole_set() -> None:
    one_long = _cases(("答一", "stop"), ("答二答二答二", "length"), ("答三", "stop"))
    stops = _stop_check(one_long)
    assert (stops.status, stops.stopped, stops.at_limit, stops.at_limit_cases) == ("passed", 2, 1, ["t1"])
    assert _failures(one_long, _template_check(one_long), stops) == []

    all_long = _cases(("答一答一", "length"), ("答二答二", "length"))
    stops = _stop_check(all_long)
    assert (stops.status, stops.stopped, stops.at_limit) == ("failed", 0, 2)
    assert _failures(all_long, _template_check(all_long), stops) == ["no_stop"]


def test_one_english_answer_is_behaviour_but_no_chinese_at_all_fails() -> None:
    mixed = _cases(("2 + 2 = 4.", "stop"), ("北京是首都。", "stop"))
    assert _failures(mixed, _template_check(mixed), _stop_check(mixed)) == []
    english = _cases(("2 + 2 = 4.", "stop"), ("Beijing.", "stop"))
    assert _failures(english, _template_check(english), _stop_check(english)) == ["no_chinese"]


class _Tokenizer:
    """Characters as token ids: enough to check the comparison and its decoding."""

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids: list[int], **_: object) -> str:
        return "".join(chr(i) for i in ids)


def test_prompt_tokens_name_the_first_difference_and_both_sides() -> None:
    tok = _Tokenizer()
    same = _prompt_tokens(tok, "abc", _gen("x", "stop", [97, 98, 99, 120], 3))
    assert (same.status, same.matching_tokens, same.expected_tokens) == ("verified", 3, 3)
    other = _prompt_tokens(tok, "abcdef", _gen("x", "stop", [97, 98, 88, 100, 120], 4))
    assert (other.status, other.first_difference, other.expected_tokens, other.ollama_tokens) == (
        "failed",
        2,
        6,
        4,
    )
    assert (other.expected_around, other.ollama_around) == ("abcdef", "abXd")
    shorter = _prompt_tokens(tok, "abc", _gen("x", "stop", [97, 98], 2))
    assert (shorter.status, shorter.first_difference) == ("failed", 2)
    assert _prompt_tokens(tok, "abc", _gen("x", "stop")).reason == "no_context"
    assert _prompt_tokens("no merged model", "abc", _gen("x", "stop", [97], 1)).status == "not_checked"


def test_verdict_lines() -> None:
    passed = ApiTest.from_dict(
        {
            "status": "passed",
            "cases": [{"ok": True}] * 3,
            "failures": [],
            "template": {"status": "verified", "matching_tokens": 405, "expected_tokens": 405},
            "stops": {"status": "passed", "stopped": 2, "at_limit": 1},
        }
    )
    assert _verdict(passed) == (
        "API test passed (template verified, 405/405 prompt tokens; 2/3 answers ended by a stop)"
    )
    failed = ApiTest.from_dict(
        {
            "status": "failed",
            "cases": [{"ok": True}, {"ok": False}],
            "failures": ["template_mismatch", "request_failed"],
            "template": {"status": "failed", "case": 1},
            "stops": {"status": "passed", "stopped": 1, "at_limit": 0},
        }
    )
    assert _verdict(failed) == (
        "API test FAILED (template MISMATCH in case 1; 1/2 answers ended by a stop; failures: request_failed)"
    )
    not_run = ApiTest.from_dict({"status": "not_run", "reason": "deploy.test_prompts is 0", "cases": []})
    assert _verdict(not_run) == "API test not run (deploy.test_prompts is 0)"
