"""The input formats of the prepare stage: CSV and JSON arrays read like JSONL; ShareGPT and messages
conversations become history plus a last turn, trained with loss on every answer only."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.prepare.helpers import (
    all_rows,
    prepare,
    read_split,
    sample_records,
    split_contents,
    write_jsonl,
)


def tricky_records() -> list[dict[str, str]]:
    return [
        *sample_records(18),
        {
            "instruction": "把下面这句话翻译成英文。",
            "input": "他说：“你好，世界”，然后笑了。",
            "output": 'He said, "Hello, world", and then smiled.',
        },
        {"instruction": "列出两种水果，用逗号分隔", "input": "", "output": "苹果，香蕉\n以及「橙子」"},
    ]


def test_csv_and_json_array_read_like_jsonl(tmp_path):
    records = tricky_records()
    jsonl = write_jsonl(tmp_path / "qa.jsonl", records)
    array = tmp_path / "qa.json"
    array.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    table = tmp_path / "qa.csv"
    with open(table, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(records)
    assert "“你好，世界”" in table.read_text(encoding="utf-8")

    small = ("data.test_size=2", "data.val_size=2")
    contents, results = {}, {}
    for path in (jsonl, array, table):
        run_dir = tmp_path / f"run-{path.suffix[1:]}"
        results[path.suffix] = prepare(run_dir, [path], *small)
        contents[path.suffix] = split_contents(run_dir)
    assert [results[s]["inputs"][0]["format"] for s in (".jsonl", ".json", ".csv")] == [
        "jsonl",
        "json",
        "csv",
    ]
    for suffix in (".json", ".csv"):
        assert results[suffix]["records_in"] == results[".jsonl"]["records_in"] == len(records)
        assert results[suffix]["records_kept"] == len(records)
        assert contents[suffix] == contents[".jsonl"], suffix
    outputs = {row[2] for rows in contents[".csv"].values() for row in rows}
    assert 'He said, "Hello, world", and then smiled.' in outputs
    assert "苹果，香蕉\n以及「橙子」" in outputs


def test_csv_rejections_name_file_lines(tmp_path):
    table = tmp_path / "qa.csv"
    with open(table, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["instruction", "input", "output"])
        writer.writerows([r["instruction"], r["input"], r["output"]] for r in sample_records(6))
        writer.writerow(["没有答案的问题", "", ""])  # line 8 of the file
    run_dir = tmp_path / "run"
    prepare(run_dir, [table], "data.test_size=1", "data.val_size=1")
    rejected = read_split(run_dir, "rejected")
    assert [(Path(r["source"]).name, r["line"], r["reason"]) for r in rejected] == [
        ("qa.csv", 8, "empty_output")
    ]


def _conversation_records(kind: str, n: int) -> list[dict[str, Any]]:
    """n conversations of 1-3 turns built from the bundled records, in ShareGPT or messages form."""
    out = []
    for i in range(n):
        turns = [
            {"instruction": f"第{i}组第{t}问：{i}加{t}等于几？", "output": f"{i}加{t}等于{i + t}。"}
            for t in range(1 + i % 3)
        ]
        if kind == "sharegpt":
            msgs = [{"from": "system", "value": "你是测试助手。"}] if i % 2 else []
            for r in turns:
                msgs += [{"from": "human", "value": r["instruction"]}, {"from": "gpt", "value": r["output"]}]
            out.append({"conversations": msgs})
        else:
            msgs = [{"role": "system", "content": "你是测试助手。"}] if i % 2 else []
            for r in turns:
                msgs += [
                    {"role": "user", "content": r["instruction"]},
                    {"role": "assistant", "content": r["output"]},
                ]
            out.append({"messages": msgs})
    return out


@pytest.mark.parametrize("kind", ["sharegpt", "messages"])
def test_conversation_formats_become_history_plus_last_turn(kind, tmp_path):
    records = _conversation_records(kind, 24)
    results = prepare(tmp_path / "run", [write_jsonl(tmp_path / f"{kind}.jsonl", records)])
    assert results["records_kept"] == 24 and results["record_formats"] == {kind: 24}
    assert results["multi_turn_records"] == 16
    from trainer import prompt_format

    fmt = prompt_format.load(tmp_path / "run")
    rows = {row["instruction"]: row for row in all_rows(tmp_path / "run")}
    three = records[2]["conversations" if kind == "sharegpt" else "messages"]
    texts = [m["value" if kind == "sharegpt" else "content"] for m in three]
    row = rows[texts[-2]]
    assert row["history"] == [[texts[0], texts[1]], [texts[2], texts[3]]] and row["output"] == texts[-1]
    assert "system" not in row  # conversation 2 has no system message: the config's applies
    pieces = fmt.record_segments(row)
    assert [is_answer for _, is_answer in pieces] == [False, True] * 3
    assert row["prompt"] == "".join(text for text, _ in pieces[:-1]) and row["completion"] == pieces[-1][0]
    assert row["prompt"].count("[INST]") == 3 and row["prompt"].startswith("[INST] <<SYS>>\n你是小知。")
    with_system = rows[
        records[1]["conversations" if kind == "sharegpt" else "messages"][-2][
            "value" if kind == "sharegpt" else "content"
        ]
    ]
    assert with_system["system"] == "你是测试助手。" and "你是测试助手。" in with_system["prompt"]


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        ({"conversations": []}, "non-empty list"),
        ({"conversations": [{"from": "human", "value": "你好"}]}, "must end with an assistant turn"),
        ({"messages": [{"role": "assistant", "content": "你好"}]}, "where a user turn is expected"),
        ({"messages": [{"role": "robot", "content": "你好"}]}, "messages[0].role is 'robot'"),
        ({"conversations": [{"from": "human", "value": 3}]}, "string 'value'"),
    ],
)
def test_broken_conversations_are_rejected_naming_the_turn(record, detail, tmp_path):
    data = write_jsonl(tmp_path / "conv.jsonl", [*_conversation_records("sharegpt", 20), record])
    prepare(tmp_path / "run", [data])
    rejected = [
        json.loads(x) for x in (tmp_path / "run" / "data" / "rejected.jsonl").read_text().splitlines()
    ]
    assert len(rejected) == 1 and rejected[0]["line"] == 21 and rejected[0]["reason"] == "invalid_record"
    assert detail in rejected[0]["detail"]


def test_multi_turn_record_is_trained_with_loss_on_every_answer_only(tiny_cfg):
    from trainer import prompt_format
    from trainer.models import load_tokenizer, resolve_base_model
    from trainer.recipe import tokenize_conversation

    tokenizer = load_tokenizer(resolve_base_model(tiny_cfg), False)
    fmt = prompt_format.build("llama2", "你是小知。")
    row = {
        "instruction": "第三个问题？",
        "input": "",
        "output": "第三个回答。",
        "history": [["第一个问题？", "第一个回答。"], ["第二个问题？", "第二个回答。"]],
    }
    pieces = fmt.record_segments(row)
    out = tokenize_conversation(tokenizer, pieces)
    ids, labels = out["input_ids"], out["labels"]
    assert len(ids) == len(labels) and ids == tokenizer("".join(t for t, _ in pieces))["input_ids"]
    trained = [i for i, label in enumerate(labels) if label != -100]
    assert all(labels[i] == ids[i] for i in trained)
    # The trained tokens are exactly the three answers (each with its end marker): contiguous runs.
    runs, start = [], None
    for i in range(len(labels) + 1):
        on = i < len(labels) and labels[i] != -100
        if on and start is None:
            start = i
        if not on and start is not None:
            runs.append(tokenizer.decode(ids[start:i]))
            start = None
    assert len(runs) == 3, runs
    for run, answer in zip(runs, ("第一个回答。", "第二个回答。", "第三个回答。"), strict=True):
        assert answer in run and "问题" not in run and "[INST]" not in run
