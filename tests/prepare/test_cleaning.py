"""Text cleaning in the prepare stage (trainer/data_formats.clean_text): whitespace, line ends, NFC."""

from __future__ import annotations

import unicodedata

import pytest

from tests.prepare.helpers import (
    prepare,
    read_split,
    sample_records,
    write_jsonl,
)
from trainer.data_formats import clean_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("e\u0301", "é"),
        ("Cafe\u0301 au lait", "Café au lait"),
        ("你好\u3000\u3000世界", "你好 世界"),
        ("a\t\tb", "a b"),
        ("a \t\u3000 b", "a b"),
        ("a\u00a0b", "a b"),
        ("第一行\r\n第二行", "第一行\n第二行"),
        ("第一行\r第二行", "第一行\n第二行"),
        ("段落一\n\n\n\n段落二", "段落一\n\n段落二"),
        ("段落一\n  \n\u3000\n\t\n段落二", "段落一\n\n段落二"),
        ("段落一\n\n段落二", "段落一\n\n段落二"),
        ("  \n  前后空白  \n\n", "前后空白"),
        ("行尾空格   \n  行首空格", "行尾空格\n行首空格"),
        ("", ""),
        (" \u3000\t\n", ""),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_clean_text_is_idempotent_and_nfc():
    text = "  A\u030a  \r\n\r\n\r\n\r\nb\u3000c  "
    once = clean_text(text)
    assert clean_text(once) == once
    assert unicodedata.is_normalized("NFC", once)
    assert once == "Å\n\nb c"


def test_cleaning_makes_near_duplicates_duplicates(tmp_path):
    records = sample_records(6)
    near = {
        "instruction": records[1]["instruction"] + "\u3000\u3000",
        "input": "  ",
        "output": "  " + records[1]["output"] + "\r\n",
    }
    data = write_jsonl(tmp_path / "near.jsonl", [*records, near])
    run_dir = tmp_path / "run"
    results = prepare(run_dir, [data], "data.test_size=1", "data.val_size=1")
    assert results["dropped"] == {"duplicate": 1}
    assert read_split(run_dir, "rejected")[0]["line"] == 7
