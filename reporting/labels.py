"""The report's Chinese wording of stage data (`python run.py report`): metric names and
definitions, what stands in for each qualitative dimension, data augmentation, and the verdict
of one example.

Reads and writes nothing. The stages write keys and numbers (evaluate.json `metrics[].key`,
`qualitative.<dimension>`, `examples[]`; prepare.json `augmented[].method` and `factor`); the
words for them are made here, so the report can change its wording without rerunning a stage.
Older run folders carry the stage's own Chinese text (`name_zh`, `definition`, `measure`,
`verdict`, `description`): the report uses its own wording for every key it knows and falls
back to the file's text, then to the key itself, for one it does not (a foreign or newer run).
"""

from __future__ import annotations

from typing import Any

from reporting.text import is_number
from trainer.metrics import answer_chars
from trainer.results import Augmentation, EvalExample, EvalMetric, QualitativeMeasure, known

# Keyed by evaluate.json `metrics[].key` (trainer.metrics.METRIC_KEYS).
METRIC_NAME_ZH: dict[str, str] = {
    "avg_answer_chars": "平均回答长度",
    "bleu4": "BLEU-4",
    "corpus_bleu4": "BLEU-4（语料级）",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "loss": "评估损失",
    "perplexity": "困惑度",
    "distinct2": "Distinct-2",
    "hit_max_tokens_pct": "触达长度上限比例",
    "identity_pct": "身份回答正确率",
    "identity_probe_pct": "身份探针正确率",
}

# How trainer/metrics.py computes each averaged value (its module docstring has the conventions);
# shown after the metric's name ("ROUGE-1：jieba 分词后…"), so a definition does not repeat it.
METRIC_DEFINITIONS: dict[str, str] = {
    "avg_answer_chars": "回答去除首尾空白后的字符数（含标点）的平均值，单位：字符；长短本身无优劣。",
    "bleu4": (
        "字符级：每个非空白字符为一个词元，NLTK sentence_bleu（1-4 元等权、"
        "平滑方法 method3、含长度惩罚），逐条计算后取平均，×100（0-100）。"
    ),
    "corpus_bleu4": (
        "字符级，分词与平滑同上，但先汇总全部回答的 n 元组匹配数和长度再计算（NLTK corpus_bleu），"
        "×100（0-100）；通常报告的主指标，只有整体一个值，没有逐条配对，因此不做置信区间。"
    ),
    "rouge1": ("jieba 分词后用 rouge-chinese 计算单词（去重）重合的 F 值，逐条计算后取平均，×100（0-100）。"),
    "rouge2": (
        "jieba 分词后用 rouge-chinese 计算相邻词二元组（去重）重合的 F 值，逐条计算后取平均，×100（0-100）。"
    ),
    "rougeL": ("jieba 分词后用 rouge-chinese 按最长公共子序列计算的 F 值，逐条计算后取平均，×100（0-100）。"),
    "loss": "参考回答各词元的平均交叉熵（自然对数，nats/词元）；越低越好。",
    "perplexity": "困惑度 = exp(评估损失)，即模型对参考回答每个词元的平均不确定程度；越低越好。",
    "distinct2": (
        "全部回答中不重复的字符二元组数 ÷ 二元组总数 ×100（忽略空白，不跨回答）；越高说明重复越少。"
    ),
    "hit_max_tokens_pct": "生成长度达到 max_new_tokens 上限、未自然结束的回答所占百分比；越低越好。",
    "identity_pct": "身份类问题中回答包含助手名称（拉丁字母不区分大小写）的百分比；越高越好。",
    "identity_probe_pct": (
        "身份探针（一组从未用于训练、与训练问题不重复的“你是谁”类问题）中回答正确的百分比："
        "须含助手名称，问及开发者时还须含开发者名称，自称其他模型或公司的产品即判为错误；越高越好。"
    ),
}

# evaluate.json `metrics[].significance` (trainer/significance.py): the verdict its 95 % interval allows.
SIGNIFICANCE_ZH: dict[str, str] = {
    "improved": "提升",
    "worsened": "下降",
    "increased": "上升（无优劣方向）",
    "decreased": "下降（无优劣方向）",
    "no_significant_change": "无显著变化",
}

# Keyed by evaluate.json `qualitative.<dimension>`: the stand-in trainer/evaluate.py `_qualitative`
# measures for each dimension (ROUGE-L, keyword overlap, perplexity, term coverage).
QUALITATIVE_MEASURES: dict[str, str] = {
    "accuracy": "与参考答案的一致程度：测试集平均 ROUGE-L",
    "relevance": (
        "问题关键词覆盖率：问题经 jieba 分词、去除停用词和标点后的实词中，出现在回答里的比例 ×100，"
        "作为回答相关性的代理指标。"
    ),
    "fluency": "参考答案在模型下的困惑度；重复度另见 Distinct-2 与触顶比例",
    "professionalism": (
        "领域术语占比：回答中（去重的、两字及以上的）实词里属于领域术语表的比例 ×100；"
        "术语表为训练集回答中出现最多的多字词，作为专业性的代理指标。"
    ),
}


def _text(value: Any) -> str:
    """A stage's own text field as a string ("" when absent, null or blank)."""
    return str(known(value, "") or "").strip()


def metric_name(m: EvalMetric) -> str:
    """The metric's Chinese name: the report's own, else the file's `name_zh`, else its key."""
    key = str(known(m.key, ""))
    return METRIC_NAME_ZH.get(key) or _text(m.name_zh) or key


def significance(m: EvalMetric) -> str | None:
    """提升 / 下降 / 无显著变化 of a metric from its interval's verdict; None when it has none."""
    return SIGNIFICANCE_ZH.get(str(known(m.significance, "")))


def metric_definition(m: EvalMetric) -> str:
    """How the metric is computed: the report's own words, else the file's `definition` ("" if neither)."""
    return METRIC_DEFINITIONS.get(str(known(m.key, ""))) or _text(m.definition)


def qualitative_measure(dimension: str, item: QualitativeMeasure) -> str:
    """What stands in for a qualitative dimension: the report's words, else the file's `measure`."""
    return QUALITATIVE_MEASURES.get(dimension) or _text(item.measure)


def augmentation(a: Augmentation) -> str:
    """One prepare.json `augmented[]` step in words, from its `method` and `factor`."""
    method, factor = str(known(a.method, "")), known(a.factor, None)
    if method == "identity_oversample":
        times = f" {factor} 次" if is_number(factor) else ""
        return f"身份类训练样本重复{times}（仅训练集）"
    return _text(a.description) or method or "未记录方法的数据增强"


def example_lengths(example: EvalExample) -> str:
    """The tuned answer's and the reference's length in characters ("" without the tuned answer).

    Lengths are trainer.metrics.answer_chars of the texts, as in the average answer length; the
    ROUGE-L change itself is worded once, by reporting.facts.example_verdict.
    """
    after = known(example.after, None)
    if not after:
        return ""
    ref_chars = answer_chars(str(known(example.reference, "") or ""))
    return f"微调后回答 {answer_chars(str(after))} 字，参考答案 {ref_chars} 字"
