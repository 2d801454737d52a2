"""The report's own wording of stage data (reporting/labels.py): every key the stages write has a
label, and a key the report does not know falls back to the file's text, then to the key."""

from __future__ import annotations

import dataclasses

from reporting import labels
from trainer import metrics
from trainer.results import Augmentation, EvalExample, EvalMetric, Qualitative, QualitativeMeasure


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_every_metric_key_and_qualitative_dimension_has_its_wording() -> None:
    assert set(labels.METRIC_NAME_ZH) == set(labels.METRIC_DEFINITIONS) == set(metrics.METRIC_KEYS)
    assert all(_has_cjk(text) for text in labels.METRIC_DEFINITIONS.values())
    dimensions = {f.name for f in dataclasses.fields(Qualitative) if f.name != "extra"}
    assert set(labels.QUALITATIVE_MEASURES) == dimensions


def test_the_reports_wording_wins_over_an_older_files_text() -> None:
    old = EvalMetric(key="rougeL", name_zh="旧名", definition="旧定义")
    assert labels.metric_name(old) == "ROUGE-L"
    assert labels.metric_definition(old) == labels.METRIC_DEFINITIONS["rougeL"]
    assert labels.qualitative_measure("fluency", QualitativeMeasure(measure="旧说明")).startswith("参考答案")


def test_an_unknown_key_falls_back_to_the_files_text_then_the_key() -> None:
    assert labels.metric_name(EvalMetric(key="chrf", name_zh=" chrF++ ")) == "chrF++"
    assert labels.metric_name(EvalMetric(key="chrf")) == "chrf"
    assert labels.metric_definition(EvalMetric(key="chrf")) == ""
    assert labels.qualitative_measure("style", QualitativeMeasure(measure="风格")) == "风格"
    assert labels.augmentation(Augmentation(method="back_translation", description="回译")) == "回译"
    assert labels.augmentation(Augmentation(method="back_translation")) == "back_translation"


def test_augmentation_is_worded_from_method_and_factor() -> None:
    step = Augmentation(method="identity_oversample", factor=3, records_added=96, description="旧")
    assert labels.augmentation(step) == "身份类训练样本重复 3 次（仅训练集）"
    assert labels.augmentation(Augmentation(method="identity_oversample")) == "身份类训练样本重复（仅训练集）"


def test_example_lengths_from_the_example_texts() -> None:
    example = EvalExample(rougeL_before=10.0, rougeL_after=10.5, reference=" 参考答案 ", after="回答\n")
    assert labels.example_lengths(example) == "微调后回答 2 字，参考答案 4 字"
    # Without the tuned answer there is nothing to count (the report then words only the ROUGE-L).
    assert labels.example_lengths(EvalExample(rougeL_after=1.0, verdict="旧结论")) == ""
