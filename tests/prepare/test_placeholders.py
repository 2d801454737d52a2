"""Placeholders of other toolkits in the prepare stage: {{name}} is filled, an unknown one is rejected
(or stops a strict run) naming the record, field and placeholder."""

from __future__ import annotations

import json

from tests.prepare.helpers import (
    CONTENT,
    all_rows,
    cli_in_process,
    files_override,
    prepare,
    prepare_args,
    sample_records,
    write_jsonl,
)


def test_name_placeholder_of_other_toolkits_is_filled(tmp_path):
    identity = {"instruction": "你是谁？", "input": "", "output": "我是{{name}}，由{{author}}开发的助手。"}
    data = write_jsonl(tmp_path / "identity.jsonl", [identity, *sample_records(20)])
    prepare(tmp_path / "run", [data], "data.assistant_name=小帮", "data.author=测试组")
    rows = all_rows(tmp_path / "run")
    assert not any("{{" in row[k] for row in rows for k in CONTENT)
    filled = [row for row in rows if row["instruction"] == "你是谁？"]
    assert filled and filled[0]["output"] == "我是小帮，由测试组开发的助手。" and filled[0]["identity"]
    assert "我是小帮" in filled[0]["completion"]


def test_leftover_placeholder_is_rejected_with_record_field_and_placeholder(tmp_path):
    leftover = {"instruction": "你是哪家公司的？", "input": "", "output": "我来自{{company}}。"}
    data = write_jsonl(tmp_path / "mixed.jsonl", [*sample_records(20), leftover])
    results = prepare(tmp_path / "run", [data])
    assert results["dropped"] == {"placeholder": 1}
    assert not any("{{" in row[k] for row in all_rows(tmp_path / "run") for k in CONTENT)
    rejected = [
        json.loads(x) for x in (tmp_path / "run" / "data" / "rejected.jsonl").read_text().splitlines()
    ]
    assert rejected[0]["line"] == 21 and rejected[0]["reason"] == "placeholder"
    assert "'output'" in rejected[0]["detail"] and "{{company}}" in rejected[0]["detail"]


def test_leftover_placeholder_stops_a_strict_run_naming_it(tmp_path):
    leftover = {"instruction": "介绍{{product}}。", "input": "", "output": "好的。"}
    data = write_jsonl(tmp_path / "strict.jsonl", [leftover, *sample_records(20)])
    result = cli_in_process(prepare_args(tmp_path / "run", [files_override([data]), "data.strict=true"]))
    assert result.rc == 2 and "Traceback" not in result.stderr
    assert "strict.jsonl: record at line 1" in result.stderr and "{{product}}" in result.stderr
    assert "'instruction'" in result.stderr
