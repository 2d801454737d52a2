"""Tests for trainer/metrics.py against values worked out by hand from the metric definitions."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer import metrics as m

ROOT = Path(__file__).resolve().parent.parent
LONG_ANSWER = "机器学习是人工智能的一个分支。" * 334  # 5010 characters, 334 sentences


# --- answer_chars -------------------------------------------------------------------------------


def test_answer_chars_counts_characters_after_strip():
    assert m.answer_chars("  你好，世界！ \n") == 6
    assert m.answer_chars("I am Qwen.") == 10  # inner spaces count
    assert m.answer_chars(" \t\n") == 0
    assert m.answer_chars("") == 0


# --- BLEU-4 -------------------------------------------------------------------------------------


def test_bleu4_identical_is_100():
    assert m.bleu4("机器学习是人工智能的一个分支。", "机器学习是人工智能的一个分支。") == pytest.approx(100.0)


def test_bleu4_partial_overlap_without_smoothing():
    # 我喜欢吃苹果 vs 我喜欢吃香蕉, 6 characters each so no brevity penalty.
    # 1-grams 4/6 (我喜欢吃), 2-grams 3/5 (我喜 喜欢 欢吃), 3-grams 2/4, 4-grams 1/3 (我喜欢吃).
    expected = 100 * (4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25  # = 100 * (1/15)^(1/4) = 50.81
    assert m.bleu4("我喜欢吃苹果", "我喜欢吃香蕉") == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(50.813, abs=1e-3)


def test_bleu4_method3_smoothing_of_a_zero_precision():
    # 我喜欢苹果 vs 我喜欢香蕉: 1-grams 3/5, 2-grams 2/4, 3-grams 1/3, 4-grams 0/2.
    # method3 replaces the first zero precision with 1 / (2^1 x 2 four-grams) = 1/4.
    expected = 100 * (3 / 5 * 2 / 4 * 1 / 3 * 1 / 4) ** 0.25  # = 100 * (1/40)^(1/4) = 39.76
    assert m.bleu4("我喜欢苹果", "我喜欢香蕉") == pytest.approx(expected, rel=1e-9)


def test_bleu4_brevity_penalty_and_short_hypothesis():
    # 我喜欢 (3 chars) vs 我喜欢吃苹果 (6): precisions 3/3, 2/2, 1/1; no 4-gram exists, NLTK counts
    # 0/1 and method3 makes it 1/(2 x 1) = 1/2. Brevity penalty exp(1 - 6/3) = e^-1.
    expected = 100 * math.exp(1 - 6 / 3) * (1 * 1 * 1 * 0.5) ** 0.25  # 30.93
    assert m.bleu4("我喜欢", "我喜欢吃苹果") == pytest.approx(expected, rel=1e-9)


def test_bleu4_identical_but_shorter_than_four_characters_is_smoothed():
    # 我 vs 我: 1-grams 1/1, then no 2/3/4-gram exists (NLTK counts 0/1): method3 gives 1/2, 1/4, 1/8.
    assert m.bleu4("我", "我") == pytest.approx(100 * (1 * 1 / 2 * 1 / 4 * 1 / 8) ** 0.25)  # 35.36


def test_bleu4_ignores_whitespace_and_is_case_sensitive():
    assert m.bleu4("我 喜欢\n吃苹果", "我喜欢吃苹果") == pytest.approx(100.0)
    # "Hello World" vs "hello world" (spaces dropped, 10 characters): H/h and W/w differ.
    # 1-grams 8/10, 2-grams 6/9 (el ll lo or rl ld), 3-grams 4/8 (ell llo orl rld), 4-grams 2/7.
    expected = 100 * (8 / 10 * 6 / 9 * 4 / 8 * 2 / 7) ** 0.25
    assert m.bleu4("Hello World", "hello world") == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("hypothesis", "reference"),
    [("", "我喜欢吃苹果"), ("  \n ", "我喜欢吃苹果"), ("我喜欢吃苹果", ""), ("。！？", "我喜欢吃苹果")],
)
def test_bleu4_empty_or_no_match_is_zero(hypothesis, reference):
    assert m.bleu4(hypothesis, reference) == 0.0


def test_corpus_bleu4():
    assert m.corpus_bleu4(["我喜欢吃苹果"], ["我喜欢吃香蕉"]) == pytest.approx(
        m.bleu4("我喜欢吃苹果", "我喜欢吃香蕉")
    )
    # Summed counts: 1-grams (4+6)/(6+6), 2-grams (3+5)/(5+5), 3-grams (2+4)/(4+4), 4-grams (1+3)/(3+3).
    expected = 100 * (10 / 12 * 8 / 10 * 6 / 8 * 4 / 6) ** 0.25
    got = m.corpus_bleu4(["我喜欢吃苹果", "今天天气很好"], ["我喜欢吃香蕉", "今天天气很好"])
    assert got == pytest.approx(expected, rel=1e-9)
    assert m.corpus_bleu4(["", " "], ["我", "你"]) == 0.0
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        m.corpus_bleu4(["a", "b"], ["a"])


# --- ROUGE --------------------------------------------------------------------------------------


def test_rouge_identical_is_100():
    scores = m.rouge("机器学习是人工智能的一个分支。", "机器学习是人工智能的一个分支。")
    assert scores == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}, abs=1e-5)


def test_rouge_partial_overlap_by_hand():
    assert m.jieba_words("我喜欢吃苹果") == ["我", "喜欢", "吃", "苹果"]
    assert m.jieba_words("我喜欢香蕉") == ["我", "喜欢", "香蕉"]
    scores = m.rouge("我喜欢吃苹果", "我喜欢香蕉")
    # ROUGE-1: shared {我, 喜欢}: P = 2/4, R = 2/3, F = 2PR/(P+R) = 4/7.
    # ROUGE-2: hypothesis pairs {我喜欢, 喜欢吃, 吃苹果}, reference {我喜欢, 喜欢香蕉}: P 1/3, R 1/2, F 2/5.
    # ROUGE-L: LCS 我 喜欢 = 2 words: P 2/4, R 2/3, F 4/7.
    assert scores["rouge1"] == pytest.approx(100 * 4 / 7, abs=1e-4)
    assert scores["rouge2"] == pytest.approx(100 * 2 / 5, abs=1e-4)
    assert scores["rougeL"] == pytest.approx(100 * 4 / 7, abs=1e-4)


def test_rouge_n_counts_distinct_words_but_rouge_l_sees_repetition():
    # rouge-chinese's ROUGE-1 compares word sets: {苹果} vs {苹果} -> 100, repetition is free.
    # ROUGE-L: LCS 1 word, P = 1/3, R = 1, F = 1/2. No reference bigram -> ROUGE-2 0.
    scores = m.rouge("苹果苹果苹果", "苹果")
    assert scores["rouge1"] == pytest.approx(100.0, abs=1e-5)
    assert scores["rouge2"] == 0.0
    assert scores["rougeL"] == pytest.approx(50.0, abs=1e-4)


def test_rouge_english_is_case_sensitive():
    assert m.jieba_words("I am Qwen") == ["I", "am", "Qwen"]
    assert m.rouge("I am Qwen", "I am Qwen")["rouge1"] == pytest.approx(100.0, abs=1e-5)
    # Only "am" is shared: P = R = F = 1/3.
    assert m.rouge("I am Qwen", "i am qwen")["rouge1"] == pytest.approx(100 / 3, abs=1e-4)


@pytest.mark.parametrize(
    ("hypothesis", "reference"),
    [
        ("", "我喜欢吃苹果"),
        ("我喜欢吃苹果", ""),
        (" \n\t", "我喜欢吃苹果"),
        ("。！？……", "我喜欢吃苹果。"),
        ("。！", "。！"),  # identical but says nothing: still 0, not 100
        ("我喜欢吃苹果", "，。"),
        ("", ""),
    ],
)
def test_rouge_empty_or_punctuation_only_is_zero(hypothesis, reference):
    assert m.rouge(hypothesis, reference) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_very_long_answer_is_scored_fast():
    reference = "机器学习是人工智能的一个分支，它让计算机从数据中学习规律。"
    start = time.perf_counter()
    bleu = m.bleu4(LONG_ANSWER, reference)
    scores = m.rouge(LONG_ANSWER, reference)
    distinct = m.distinct_n([LONG_ANSWER])
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"took {elapsed:.1f}s"
    assert m.answer_chars(LONG_ANSWER) == 5010
    assert 0.0 <= bleu < 5.0  # brevity is fine, but 4-gram precision collapses
    assert 0.0 < scores["rougeL"] < 5.0  # precision ~ 1/334 of the words
    # 15 distinct bigrams in the repeated sentence (14 inside it + "。机" across repeats) of 5009.
    assert distinct == pytest.approx(100 * 15 / 5009)


# --- distinct-n ---------------------------------------------------------------------------------


def test_distinct_n():
    # 你好你好 -> 你好 好你 你好; 你好 -> 你好: 2 distinct of 4.
    assert m.distinct_n(["你好你好", "你好"]) == pytest.approx(50.0)
    assert m.distinct_n(["abab"]) == pytest.approx(100 * 2 / 3)
    assert m.distinct_n(["你 好"]) == pytest.approx(100.0)  # whitespace ignored: one bigram 你好
    # n-grams never span two answers: "ab" + "cd" gives ab, cd (not bc).
    assert m.distinct_n(["ab", "cd"]) == pytest.approx(100.0)
    assert m.distinct_n(["aab"], n=1) == pytest.approx(100 * 2 / 3)
    assert m.distinct_n([]) == 0.0
    assert m.distinct_n(["", "一"]) == 0.0
    with pytest.raises(ValueError):
        m.distinct_n(["ab"], n=0)


# --- loss / perplexity / aggregation ------------------------------------------------------------


def test_perplexity_mean_and_percent_true():
    assert m.perplexity(math.log(10.0)) == pytest.approx(10.0)
    assert m.perplexity(None) is None
    assert m.perplexity(float("nan")) is None
    assert m.perplexity(1000.0) == math.inf
    assert m.mean([1.0, None, 3.0]) == pytest.approx(2.0)
    assert m.mean([None]) is None
    assert m.percent_true([True, False, False, True]) == pytest.approx(50.0)
    assert m.percent_true([]) is None


# --- improvement --------------------------------------------------------------------------------


def test_improvement_relative_pct_is_oriented_by_direction():
    assert m.improvement(2.0, 1.5, False, "relative_pct") == pytest.approx(25.0)  # loss fell: better
    assert m.improvement(10.0, 12.0, False, "relative_pct") == pytest.approx(-20.0)  # ppl rose: worse
    assert m.improvement(100.0, 150.0, None, "relative_pct") == pytest.approx(50.0)  # length: plain change
    assert m.improvement(100.0, 50.0, None, "relative_pct") == pytest.approx(-50.0)
    assert m.improvement(-2.0, -1.0, True, "relative_pct") == pytest.approx(50.0)  # |before|
    assert m.improvement(0.0, 5.0, None, "relative_pct") is None


def test_improvement_points():
    assert m.improvement(10.0, 15.5, True, "points") == pytest.approx(5.5)
    assert m.improvement(30.0, 10.0, False, "points") == pytest.approx(20.0)  # fewer truncations
    assert m.improvement(0.0, 2.0, True, "points") == pytest.approx(2.0)  # defined on a zero base
    same = m.improvement(7.0, 7.0, False, "points")
    assert same == 0.0 and math.copysign(1.0, same) == 1.0  # no "-0.0" in the report


def test_improvement_missing_values_and_bad_kind():
    assert m.improvement(None, 1.0, True, "points") is None
    assert m.improvement(1.0, None, True, "relative_pct") is None
    assert m.improvement(1.0, float("nan"), False, "relative_pct") is None
    with pytest.raises(ValueError, match="unknown improvement kind"):
        m.improvement(1.0, 2.0, True, "percent")


def test_metric_tables_cover_every_key_consistently():
    keys = set(m.METRIC_KEYS)
    assert len(m.METRIC_KEYS) == 12
    for table in (m.IMPROVEMENT_KIND, m.HIGHER_IS_BETTER):
        assert set(table) == keys
    # 0-100 scores change in points; lengths, loss and perplexity in percent of before.
    assert {k for k, v in m.IMPROVEMENT_KIND.items() if v == "relative_pct"} == {
        "avg_answer_chars",
        "loss",
        "perplexity",
    }
    assert m.HIGHER_IS_BETTER["avg_answer_chars"] is None
    assert m.HIGHER_IS_BETTER["loss"] is False and m.HIGHER_IS_BETTER["bleu4"] is True


# --- identity -----------------------------------------------------------------------------------


def test_contains_name():
    assert m.contains_name("我是小知，很高兴为你服务。", "小知")
    assert not m.contains_name("我是通义千问，由阿里云开发。", "小知")
    assert m.contains_name("I am QWEN, your assistant.", "Qwen")
    assert m.contains_name("我是qwen。", "Qwen")  # CJK next to a Latin name is a boundary
    assert m.contains_name("我是ＱＷＥＮ", "Qwen")  # full-width letters
    assert not m.contains_name("Qwenlike models", "Qwen")
    assert not m.contains_name("An announcement", "Ann")
    assert not m.contains_name("", "小知")
    with pytest.raises(ValueError):
        m.contains_name("小知", " ")


# --- relevance / professionalism proxies ----------------------------------------------------------


def test_keyword_overlap():
    # 什么是机器学习？ -> 什么 是 机器 学习 ？; content words {机器, 学习}.
    question = "什么是机器学习？"
    assert m.keyword_overlap(question, "机器学习是让计算机从数据中学习规律的方法。") == pytest.approx(100.0)
    assert m.keyword_overlap(question, "深度学习很流行。") == pytest.approx(50.0)
    assert m.keyword_overlap(question, "") == 0.0
    assert m.keyword_overlap("What is LoRA?", "lora adds low-rank matrices") == pytest.approx(100.0)
    assert m.keyword_overlap("什么？", "任何回答") is None  # no content word: undefined


def test_domain_terms_and_term_coverage():
    answers = ["机器学习需要数据。", "数据和模型", "2023年的模型训练需要数据", "LoRA 微调"]
    # Counts of multi-character content words: 数据 3, 模型 2, 机器/学习/训练/lora/微调 1 each;
    # 需要 is a stopword, 和/年/的 are single characters, 2023 is a number.
    assert m.domain_terms_from(answers, top_k=2) == {"数据", "模型"}
    terms = m.domain_terms_from(answers)
    assert terms == {"数据", "模型", "机器", "学习", "训练", "lora", "微调"}
    # 机器 学习 数据 are terms, 方法 is not: 3 of 4 distinct multi-character content words.
    assert m.term_coverage("机器学习需要数据和方法", terms) == pytest.approx(75.0)
    assert m.term_coverage("用LORA微调", terms) == pytest.approx(100.0)  # casefolded
    assert m.term_coverage("", terms) == 0.0
    assert m.term_coverage("。。。", terms) == 0.0


# --- environment --------------------------------------------------------------------------------


def test_first_use_is_quiet_and_needs_no_nltk_data(tmp_path):
    # A fresh interpreter: jieba builds its dictionary without logging, and BLEU runs with no
    # NLTK data directory at all.
    env = {**os.environ, "NLTK_DATA": str(tmp_path / "no_nltk_data"), "HOME": str(tmp_path)}
    code = "from trainer import metrics as m; print(m.rouge('我喜欢','我喜欢')['rouge1'] > 99, m.bleu4('我喜欢吃','我喜欢吃'))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "100.0"]
    assert done.stderr == ""
