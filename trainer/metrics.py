"""Pure metric functions for the evaluation stage (Chinese QA answers against references).

Not a stage and no entry point: `trainer/evaluate.py` generates the answers and calls these
functions; nothing here reads or writes files. The heavy libraries (jieba, rouge-chinese, NLTK)
are imported on first use, so importing this module (e.g. for `METRIC_KEYS`) is cheap. The metrics'
Chinese names and definitions are the report's (reporting/labels.py), by key.

Conventions, as commonly reported for Chinese SFT:
- BLEU-4 is character level: every non-whitespace character is one token; NLTK `sentence_bleu`
  with `SmoothingFunction().method3`, x 100. (Not sacrebleu's `tokenize="zh"`.)
- ROUGE-1/2/L: jieba word segmentation, words joined by spaces, `rouge_chinese.Rouge().get_scores`,
  F-measure x 100. rouge-chinese counts *distinct* n-grams for ROUGE-1/2 (its default
  `exclusive=True`), so repeating a correct word is not penalised there; ROUGE-L (LCS over the
  word sequence) and `distinct_n` do see repetition.
- Every score is on a 0-100 scale except `answer_chars` (characters), loss (nats per token) and
  perplexity.
- Per-answer scores are averaged over the evaluation set by the caller (`mean` skips `None`);
  reporting/labels.py `METRIC_DEFINITIONS` describes the averaged values.

`improvement` conventions (see `IMPROVEMENT_KIND`, `HIGHER_IS_BETTER`): scores already on a
0-100 scale change in percentage points (a relative change on a near-zero base, e.g. BLEU
0.5 -> 2.0 = "+300 %", misleads); lengths, loss and perplexity change in percent of the before
value. The sign is oriented so that a positive improvement is always better; for answer length,
where neither direction is better, it is the plain change (positive = longer).
"""

from __future__ import annotations

import functools
import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from types import ModuleType

METRIC_KEYS: tuple[str, ...] = (
    "avg_answer_chars",
    "bleu4",
    "corpus_bleu4",
    "rouge1",
    "rouge2",
    "rougeL",
    "loss",
    "perplexity",
    "distinct2",
    "hit_max_tokens_pct",
    "identity_pct",
    "identity_probe_pct",
)

# "points": after - before, for scores already on a 0-100 scale.
# "relative_pct": (after - before) / |before| x 100, for lengths, loss and perplexity.
IMPROVEMENT_KIND: dict[str, str] = {
    "avg_answer_chars": "relative_pct",
    "bleu4": "points",
    "corpus_bleu4": "points",
    "rouge1": "points",
    "rouge2": "points",
    "rougeL": "points",
    "loss": "relative_pct",
    "perplexity": "relative_pct",
    "distinct2": "points",
    "hit_max_tokens_pct": "points",
    "identity_pct": "points",
    "identity_probe_pct": "points",
}

# None: neither direction is better (length); the improvement is still reported, unoriented.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "avg_answer_chars": None,
    "bleu4": True,
    "corpus_bleu4": True,
    "rouge1": True,
    "rouge2": True,
    "rougeL": True,
    "loss": False,
    "perplexity": False,
    "distinct2": True,
    "hit_max_tokens_pct": False,
    "identity_pct": True,
    "identity_probe_pct": True,
}

# Function words, pronouns and question/instruction words that say nothing about the topic.
# Compared after casefolding, so the English entries are lower case.
_STOPWORD_TEXT = """
    的 地 得 了 着 过 是 在 有 和 与 及 或 或者 也 都 就 而 且 并 并且 但 但是 而且 还 又 再 才 只
    吗 呢 吧 啊 呀 哦 嘛 么 之 其 以 为 于 对 从 到 给 让 被 把 向 由 将 等 等等 跟 同 比 如 若
    如果 因为 所以 因此 虽然 然后 那么 这样 那样 这么 一 一个 一些 一种 一下 一般
    我 你 您 他 她 它 我们 你们 他们 她们 它们 自己 这 那 这个 那个 这些 那些 这里 那里 这种 那种
    什么 怎么 怎样 怎么样 如何 为什么 为何 哪 哪个 哪些 哪里 哪儿 多少 几 是否 是不是 有没有
    请 请问 请你 能否 能不能 可以 可能 能 会 要 需要 应该 应当 必须 想 想要 告诉 介绍 解释 说明
    描述 简述 简要 简单 概述 谈谈 说说 讲讲 列举 分析 回答 问题 下 上 中 里 内 外 前 后
    很 太 更 最 非常 比较 特别 十分 已经 正在 没有 不 没 不是 就是 还是 以及 其中 通过 进行 使用
    主要 方面 时候 之间 关于 对于 包括 具有 存在 作为 个 种 些 次
    a an the is are was were be been am do does did of to in on at by for with from as and or
    not no it its this that these those what which who whom how why when where can could would
    should will please i you he she we they me my your our their
"""
STOPWORDS: frozenset[str] = frozenset(_STOPWORD_TEXT.split())


@functools.cache
def _jieba() -> ModuleType:
    """jieba, initialised once and quietly (it logs the dictionary build at INFO otherwise)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


@functools.cache
def _rouge_scorer():
    from rouge_chinese import Rouge

    return Rouge()


def jieba_words(text: str) -> list[str]:
    """jieba's default (accurate-mode, HMM) segmentation of `text`, whitespace tokens dropped."""
    return [w for w in _jieba().lcut(text) if w.strip()]


def _has_word_char(word: str) -> bool:
    """At least one letter, digit or CJK character (str.isalnum is true for CJK ideographs)."""
    return any(ch.isalnum() for ch in word)


def _is_content(word: str) -> bool:
    return _has_word_char(word) and word.casefold() not in STOPWORDS


def _chars(text: str) -> list[str]:
    return [ch for ch in text if not ch.isspace()]


def answer_chars(text: str) -> int:
    """Length of an answer in characters after stripping surrounding whitespace.

    Every Unicode code point counts once, punctuation and inner spaces included
    (a CJK character is one character, not bytes or tokens).
    """
    return len(text.strip())


def bleu4(hypothesis: str, reference: str) -> float:
    """Character-level sentence BLEU-4 of one answer against one reference, 0-100.

    Tokenisation: every non-whitespace character is one token (Chinese has no spaces; an
    English word is spelled out letter by letter, case-sensitive). Score: NLTK `sentence_bleu`
    with uniform weights over 1-4-grams, brevity penalty exp(1 - r/c) when the answer is
    shorter than the reference, and `SmoothingFunction().method3` (NIST geometric smoothing:
    the k-th n-gram order with no match gets precision 1 / (2^k x its n-gram count)), x 100.
    An answer with no characters, or no unigram match, scores 0.0. An answer shorter than 4
    characters has no 4-gram, so even an exact match scores below 100 (我 vs 我: 35.36).
    """
    hyp, ref = _chars(hypothesis), _chars(reference)
    if not hyp or not ref:
        return 0.0
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return 100.0 * float(sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method3))


def corpus_bleu4(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Character-level corpus BLEU-4, 0-100: same tokenisation and smoothing as `bleu4`, but
    n-gram matches and lengths are summed over all pairs before dividing (Papineni et al.),
    instead of averaging per-answer scores. 0.0 when there is nothing to score."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    hyps = [_chars(h) for h in hypotheses]
    refs = [[_chars(r)] for r in references]
    if not any(hyps):
        return 0.0
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    return 100.0 * float(corpus_bleu(refs, hyps, smoothing_function=SmoothingFunction().method3))


def rouge(hypothesis: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures of one answer against one reference, 0-100.

    Tokenisation: jieba segmentation (`jieba_words`), words joined by single spaces, scored by
    `rouge_chinese.Rouge().get_scores` (which also splits sentences at 。！？). Punctuation
    tokens are kept, as is usual; no case folding. ROUGE-1/2 compare the *sets* of distinct
    words / adjacent word pairs (rouge-chinese default); ROUGE-L uses the longest common
    subsequence of the whole word sequences. F = 2PR / (P + R) (rouge-chinese adds 1e-8 to
    the denominator, so identical texts give 99.9999995), x 100.

    If either side has no content word (empty, whitespace or punctuation only), all three are
    0.0: such an answer says nothing, and rouge-chinese would raise on it.
    """
    hyp_words, ref_words = jieba_words(hypothesis), jieba_words(reference)
    if not any(_has_word_char(w) for w in hyp_words) or not any(_has_word_char(w) for w in ref_words):
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    [scores] = _rouge_scorer().get_scores(" ".join(hyp_words), " ".join(ref_words))
    return {
        "rouge1": 100.0 * scores["rouge-1"]["f"],
        "rouge2": 100.0 * scores["rouge-2"]["f"],
        "rougeL": 100.0 * scores["rouge-l"]["f"],
    }


def distinct_n(texts: Iterable[str], n: int = 2) -> float:
    """Distinct-n over a set of answers, 0-100: distinct character n-grams / all n-grams x 100.

    Tokenisation: non-whitespace characters, as in `bleu4`. n-grams are taken within each answer
    (never across two answers) and counted distinct over all answers together. Lower means more
    repetition (within and across answers). 0.0 when the answers hold no n-gram at all.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total = 0
    seen: set[tuple[str, ...]] = set()
    for text in texts:
        chars = _chars(text)
        grams = [tuple(chars[i : i + n]) for i in range(len(chars) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return 100.0 * len(seen) / total if total else 0.0


def perplexity(loss: float | None) -> float | None:
    """exp(loss), loss being the mean cross-entropy per token in nats. None when the loss is
    None or not finite; inf if exp overflows (loss > ~709, never for a working model)."""
    if loss is None or not math.isfinite(loss):
        return None
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def improvement(
    before: float | None, after: float | None, higher_is_better: bool | None, kind: str
) -> float | None:
    """Change from `before` to `after`, oriented so that a positive value is always better.

    kind "points": after - before, in points of a 0-100 score (BLEU, ROUGE, distinct-n,
    identity %, hit-max %). kind "relative_pct": (after - before) / |before| x 100 (lengths,
    loss, perplexity); None when before == 0. The sign is flipped when `higher_is_better` is
    False (loss 2.0 -> 1.5 is +25.0); with None (length) it is the plain change (positive =
    grew). None when either value is None or not finite. See `IMPROVEMENT_KIND`.
    """
    if kind not in ("points", "relative_pct"):
        raise ValueError(f"unknown improvement kind {kind!r}: use 'points' or 'relative_pct'")
    if before is None or after is None or not (math.isfinite(before) and math.isfinite(after)):
        return None
    if kind == "points":
        change = after - before
    elif before == 0:
        return None
    else:
        change = (after - before) / abs(before) * 100.0
    if higher_is_better is False:
        change = -change
    return change + 0.0  # turns -0.0 into 0.0


def contains_name(text: str, name: str) -> bool:
    """Whether an answer names the assistant (identity check).

    Both sides are NFKC-normalised (full-width ＱＷＥＮ = QWEN) and casefolded, so Latin names
    match in any case. A name that starts/ends with a Latin letter or digit must not be glued to
    another one ("Ann" is not found in "Announcement"); a Chinese name is a plain substring.
    """
    needle = unicodedata.normalize("NFKC", name).strip().casefold()
    if not needle:
        raise ValueError("the assistant name is empty")
    hay = unicodedata.normalize("NFKC", text).casefold()
    before = r"(?<![a-z0-9])" if re.match(r"[a-z0-9]", needle) else ""
    after = r"(?![a-z0-9])" if re.search(r"[a-z0-9]$", needle) else ""
    return re.search(before + re.escape(needle) + after, hay) is not None


def keyword_overlap(question: str, answer: str) -> float | None:
    """Share of the question's content words that occur in the answer, 0-100 (relevance proxy).

    Content words: the distinct jieba words of the question with a letter, digit or CJK
    character that are not in `STOPWORDS` (question words such as 什么/如何/请 are stopwords),
    casefolded. A word counts if it occurs anywhere in the casefolded answer as a substring, so a
    different segmentation of the answer does not hide it. None when the question has no
    content word (the measure is undefined; `mean` skips it).
    """
    words = {w.casefold() for w in jieba_words(question) if _is_content(w)}
    if not words:
        return None
    hay = answer.casefold()
    return 100.0 * sum(w in hay for w in words) / len(words)


def _term_candidates(text: str) -> list[str]:
    """Multi-character content words of `text` that are not pure numbers, casefolded."""
    return [
        w.casefold()
        for w in jieba_words(text)
        if len(w) >= 2 and _is_content(w) and not w.replace(".", "").isdigit()
    ]


def term_coverage(answer: str, domain_terms: set[str]) -> float:
    """Share of the answer's distinct multi-character content words that are domain terms, 0-100
    (professionalism proxy). Words as in `domain_terms_from` (jieba, >= 2 characters, no
    stopwords or pure numbers, casefolded). 0.0 for an answer without such words."""
    words = set(_term_candidates(answer))
    if not words:
        return 0.0
    terms = {t.casefold() for t in domain_terms}
    return 100.0 * len(words & terms) / len(words)


def domain_terms_from(texts: Iterable[str], top_k: int = 200) -> set[str]:
    """The `top_k` most frequent multi-character jieba words of `texts` (the training answers):
    occurrences counted over all texts, stopwords, punctuation and pure numbers excluded,
    casefolded; ties broken alphabetically so the set is deterministic."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(_term_candidates(text))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {word for word, _ in ranked[:top_k]}


def mean(values: Iterable[float | None]) -> float | None:
    """Arithmetic mean of the values that are not None; None when there are none."""
    kept = [v for v in values if v is not None]
    return math.fsum(kept) / len(kept) if kept else None


def percent_true(flags: Iterable[bool]) -> float | None:
    """Percentage of true flags (identity hits, answers that hit max_new_tokens), 0-100; None
    for no flags at all."""
    flags = list(flags)
    return 100.0 * sum(map(bool, flags)) / len(flags) if flags else None


def percentile(values: Sequence[float | None], q: float) -> float | None:
    """The q-th percentile with linear interpolation (numpy's default); None for no values.

    The one percentile of the project: latency summaries (benchmarks) and length statistics
    (prepare) both use it.
    """
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    rank = (len(data) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(data[low])
    return float(data[low] + (data[high] - data[low]) * (rank - low))
