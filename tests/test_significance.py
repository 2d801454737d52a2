"""Paired bootstrap intervals (trainer/significance.py) and the evaluation table that carries them
(trainer/eval_table.py through trainer/evaluate.py's scoring), down to the report's words.

Answers are built, not generated: a change that is pure noise (the two answers of each item are
drawn the same way and assigned to before/after by a coin flip) must read "无显著变化"; a real change
(the tuned answers are the references) must be called significant.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reporting import facts, labels
from reporting.sections import evaluation as report_evaluation
from trainer import eval_table, evaluate, prompt_format, significance
from trainer.results import EvalMetric, EvaluateResult

ROOT = Path(__file__).resolve().parent.parent
GENERAL = ROOT / "data" / "sample" / "zh_general.jsonl"
N_ITEMS = 40


def test_interval_of_a_constant_shift_is_that_shift() -> None:
    got = significance.change_interval([10.0] * 5, [12.0] * 5, kind="points", higher_is_better=True)
    assert got == significance.Interval(2.0, 2.0, 5)
    assert significance.verdict(got, True) == significance.IMPROVED


def test_interval_is_oriented_and_relative_like_the_improvement() -> None:
    # loss 2.0 -> 1.5 everywhere: -25 % change, lower is better, so +25.
    got = significance.change_interval([2.0] * 4, [1.5] * 4, kind="relative_pct", higher_is_better=False)
    assert got is not None and got.low == pytest.approx(25.0) and got.high == pytest.approx(25.0)
    # answer length has no better direction: longer is "increased", shorter "decreased".
    longer = significance.change_interval([10, 12], [20, 24], kind="relative_pct", higher_is_better=None)
    assert longer is not None and significance.verdict(longer, None) == significance.INCREASED


def test_interval_is_seeded_and_contains_zero_for_no_change() -> None:
    rng = np.random.default_rng(1)
    before = rng.normal(50, 10, 30)
    after = before + rng.normal(0, 0.001, 30)
    a = significance.change_interval(before, after, kind="points", higher_is_better=True, seed=7)
    b = significance.change_interval(before, after, kind="points", higher_is_better=True, seed=7)
    assert a == b and a is not None
    assert a.low < 0 < a.high
    assert significance.verdict(a, True) == significance.NO_CHANGE


def test_weighted_interval_matches_the_token_weighted_mean() -> None:
    # One long answer dominates a token-weighted loss: its change decides the sign.
    got = significance.change_interval(
        [1.0, 1.0], [2.0, 0.0], kind="points", higher_is_better=False, weights=[1, 1000]
    )
    assert got is not None and got.high > 0  # some resamples are mostly the long, improved answer


def test_too_few_items_give_no_interval() -> None:
    assert significance.change_interval([1.0], [2.0], kind="points", higher_is_better=True) is None
    with pytest.raises(ValueError, match="unknown change kind"):
        significance.change_interval([1, 2], [2, 3], kind="percent", higher_is_better=True)


# ---- the evaluation table from built answers -------------------------------------------------------


def _references() -> list[str]:
    lines = GENERAL.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["output"] for line in lines[:N_ITEMS]]


def _noisy(text: str, rng: random.Random) -> str:
    """About half of the characters of `text`, in order: a poor but related answer."""
    return "".join(ch for ch in text if rng.random() < 0.5)


def _table(before: list[str], after: list[str], losses: tuple[list[float], list[float]]) -> list[EvalMetric]:
    refs = _references()
    rows = [
        {"id": f"t{i}", "instruction": f"问题{i}", "input": "", "output": ref, "identity": False}
        for i, ref in enumerate(refs)
    ]

    def answers(texts: list[str]) -> list[dict[str, Any]]:
        return [{"text": t, "hit_max": False, "error": None} for t in texts]

    got = {
        "before": answers(before),
        "after": answers(after),
        "losses_before": [(loss * 20, 20) for loss in losses[0]],
        "losses_after": [(loss * 20, 20) for loss in losses[1]],
    }
    got["loss_before"], got["loss_after"] = np.mean(losses[0]), np.mean(losses[1])
    fmt = prompt_format.build("chatml", "你是小知。")
    per = evaluate._score(Path("/nonexistent-run"), rows, got, fmt, "小知")
    values = eval_table.metric_values(per, got, [])
    return eval_table.metric_table(values, eval_table.paired_values(per, []), 2000, 42)


def _by_key(table: list[EvalMetric]) -> dict[str, EvalMetric]:
    return {str(m.key): m for m in table}


def test_pure_noise_is_no_significant_change_in_the_file_and_the_report() -> None:
    refs, rng = _references(), random.Random(3)
    pairs = [(_noisy(r, rng), _noisy(r, rng)) for r in refs]
    flips = [rng.random() < 0.5 for _ in refs]
    before = [b if f else a for (a, b), f in zip(pairs, flips, strict=True)]
    after = [a if f else b for (a, b), f in zip(pairs, flips, strict=True)]
    loss_pairs = [(rng.uniform(1.5, 2.5), rng.uniform(1.5, 2.5)) for _ in refs]
    table = _by_key(_table(before, after, ([p[0] for p in loss_pairs], [p[1] for p in loss_pairs])))
    for key in ("rouge1", "rouge2", "rougeL", "bleu4", "loss", "perplexity", "avg_answer_chars"):
        m = table[key]
        assert m.paired_items == N_ITEMS, key
        assert m.change_ci95_low <= 0 <= m.change_ci95_high, key
        assert m.significance == significance.NO_CHANGE, key
        assert report_evaluation._significance_cells(m)[1] == "无显著变化", key
    assert "无显著变化" in facts.metric_change(table["rougeL"])
    # Corpus-level BLEU is still computed, beside the per-answer rows, but carries no verdict.
    corpus = table["corpus_bleu4"]
    assert isinstance(corpus.before, float) and not isinstance(corpus.significance, str)
    assert report_evaluation._significance_cells(corpus)[1].startswith("未判断（语料级指标")


def test_a_real_change_is_called_significant() -> None:
    refs, rng = _references(), random.Random(5)
    before = [_noisy(r, rng) for r in refs]
    after = list(refs)  # the tuned model answers with the reference
    losses = ([rng.uniform(2.0, 2.5) for _ in refs], [rng.uniform(1.0, 1.5) for _ in refs])
    table = _by_key(_table(before, after, losses))
    for key in ("rouge1", "rougeL", "bleu4", "loss", "perplexity"):
        m = table[key]
        assert m.change_ci95_low > 0, key
        assert m.significance == significance.IMPROVED, key
        assert labels.significance(m) == "提升", key
    assert table["avg_answer_chars"].significance == significance.INCREASED
    sentence = facts.metric_change(table["rougeL"])
    assert "95% 置信区间 [+" in sentence and sentence.endswith("，提升）")


def test_the_interval_fields_round_trip_through_evaluate_json() -> None:
    refs, rng = _references(), random.Random(5)
    table = _table([_noisy(r, rng) for r in refs], list(refs), ([2.0] * N_ITEMS, [1.0] * N_ITEMS))
    data = EvaluateResult(metrics=table).to_dict()
    corpus = next(m for m in data["metrics"] if m["key"] == "corpus_bleu4")
    assert corpus["change_ci95_low"] is None and corpus["interval_reason"].startswith("corpus-level")
    assert EvaluateResult.from_dict(data).to_dict() == data
    assert all(not m.extra for m in EvaluateResult.from_dict(data).metrics)
