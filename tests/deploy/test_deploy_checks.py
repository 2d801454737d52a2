"""What counts as a good API-test answer, and how the headline reads it."""

from __future__ import annotations

import pytest

from trainer.deploy import _check_answer, _verdict
from trainer.results import ApiTest


@pytest.mark.parametrize(
    ("answer", "done_reason", "problems"),
    [
        ("北京是中国的首都。", "stop", []),
        ("  ", "stop", ["empty answer"]),
        ("Beijing is the capital.", "stop", ["no Chinese characters in the answer"]),
        (
            "北京是中国的首都，北京是",
            "length",
            ["done_reason is 'length', not 'stop' (no end marker within num_predict)"],
        ),
    ],
)
def test_answer_checks(answer: str, done_reason: str, problems: list[str]) -> None:
    assert _check_answer(answer, done_reason) == problems


def test_verdict_lines() -> None:
    case = {"ok": True}
    passed = ApiTest.from_dict({"status": "passed", "cases": [case] * 3, "matches_llamacpp": True})
    assert _verdict(passed) == "API test passed (3/3 answers ok, same answer as llama.cpp)"
    failed = ApiTest.from_dict({"status": "failed", "cases": [case, {"ok": False}], "matches_llamacpp": None})
    assert _verdict(failed) == "API test FAILED (1/2 answers ok)"
    not_run = ApiTest.from_dict({"status": "not_run", "reason": "deploy.test_prompts is 0", "cases": []})
    assert _verdict(not_run) == "API test not run (deploy.test_prompts is 0)"
