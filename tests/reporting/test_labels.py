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


def test_example_verdict_from_the_examples_numbers() -> None:
    def verdict(before: float, after: float) -> str:
        return labels.example_verdict(
            EvalExample(rougeL_before=before, rougeL_after=after, reference=" 参考答案 ", after="回答\n")
        )

    assert verdict(10.0, 10.5) == "ROUGE-L 基本持平（10.0 → 10.5）；微调后回答 2 字，参考答案 4 字。"
    assert verdict(10.0, 30.0).startswith("ROUGE-L 提高 20.0 分（10.0 → 30.0），与参考答案更接近；")
    assert verdict(30.0, 10.0).startswith("ROUGE-L 下降 20.0 分（30.0 → 10.0），此例微调后变差；")
    # Without its ROUGE-L there is nothing to word (the report then quotes an older file's verdict).
    assert labels.example_verdict(EvalExample(rougeL_after=1.0, verdict="旧结论")) == ""
