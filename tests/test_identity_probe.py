"""The identity probe (trainer/identity_probe.py) and the near-duplicate measure it shares with the
leakage check (trainer/near_duplicates.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer import identity_probe, near_duplicates
from trainer.config import load_config
from trainer.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "data" / "eval" / "identity_probe.jsonl"
IDENTITY = ROOT / "data" / "sample" / "zh_identity.jsonl"
GENERAL = ROOT / "data" / "sample" / "zh_general.jsonl"
NAME, AUTHOR = "小知", "本地微调团队"


def _questions(path: Path) -> list[str]:
    return [json.loads(line)["instruction"] for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_the_shipped_probe_has_at_least_30_questions_none_of_them_trained_on() -> None:
    questions = identity_probe.load(PROBE, NAME, AUTHOR)
    assert len(questions) >= 30
    assert len({q.question for q in questions}) == len(questions)
    assert sum(q.asks_author for q in questions) >= 5
    assert any(q.question.isascii() for q in questions)  # varied register: English too
    # No probe question is (nearly) a question of the bundled training data, identity or general.
    kept, overlaps = identity_probe.split_trained(questions, _questions(IDENTITY) + _questions(GENERAL))
    assert overlaps == [] and kept == questions


def test_the_default_config_asks_the_shipped_probe() -> None:
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert (ROOT / cfg.evaluate.identity_probe).resolve() == PROBE
    assert cfg.evaluate.bootstrap_resamples >= 1000


def test_a_probe_question_copied_in_training_is_excluded() -> None:
    questions = identity_probe.load(PROBE, NAME, AUTHOR)
    copied = questions[0].question + "  "  # whitespace does not hide a copy
    kept, overlaps = identity_probe.split_trained(questions, [copied, "完全无关的问题：光合作用是什么？"])
    assert len(kept) == len(questions) - 1
    assert overlaps == [{"question": questions[0].question, "train_question": copied, "similarity": 1.0}]


@pytest.mark.parametrize(
    ("answer", "asks_author", "hit"),
    [
        ("我是小知，一个中文问答助手。", False, True),
        ("你好！我叫小知。", False, True),
        ("我是一个AI助手。", False, False),  # no name
        ("我是小知，由本地微调团队训练。", True, True),
        ("我是小知。", True, False),  # the author was asked and not named
        ("我是小知，不是ChatGPT。", False, True),  # a denial is not a claim
        ("我是小知，是ChatGPT的一个版本。", False, False),  # a claim to be another model
        ("我是小知，由OpenAI开发。", True, False),
        ("I am 小知, not Claude.", False, True),
    ],
)
def test_scoring_rule(answer: str, asks_author: bool, hit: bool) -> None:
    q = identity_probe.ProbeQuestion(1, "你是谁？", asks_author)
    assert identity_probe.is_hit(answer, q, NAME, AUTHOR) is hit


def test_a_broken_probe_file_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "probe.jsonl"
    bad.write_text('{"question": "你是谁？"}\n{"question": ""}\nnot json\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"line 2: field 'question'.*line 3: invalid JSON"):
        identity_probe.load(bad, NAME, AUTHOR)
    with pytest.raises(UserError, match="missing"):
        identity_probe.load(tmp_path / "none.jsonl", NAME, AUTHOR)


def test_placeholders_are_filled(tmp_path: Path) -> None:
    path = tmp_path / "probe.jsonl"
    path.write_text('{"question": "{{author}}做了你吗？", "asks_author": true}\n', encoding="utf-8")
    [q] = identity_probe.load(path, NAME, AUTHOR)
    assert q.question == "本地微调团队做了你吗？" and q.asks_author


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ("什么是机器学习？", "什么是机器学习", True),  # punctuation
        ("What is Machine Learning?", "what is machine learning", True),  # case, spaces
        ("请简要介绍一下中国的四大发明有哪些", "请简要介绍一下中国的四大发明是哪些", True),  # one character
        ("什么是光合作用？", "什么是区块链？", False),  # a shared pattern only
        ("你叫什么名字？", "你的名字叫什么？", False),  # a paraphrase, not a copy
    ],
)
def test_near_duplicate_threshold(a: str, b: str, match: bool) -> None:
    got = near_duplicates.find_matches([a], ["毫不相关的一句话", b])
    assert bool(got) is match
    if match:
        assert got[0].corpus_index == 1
