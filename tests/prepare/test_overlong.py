"""Over-long records in the prepare stage: dropped (to rejected.jsonl) or truncated (data.overlong)."""

from __future__ import annotations

from pathlib import Path

from tests.prepare.helpers import (
    SPLITS,
    prepare,
    read_split,
    sample_records,
    write_jsonl,
)

SHORT = [
    {"instruction": "一加一等于几？", "input": "", "output": "等于二。"},
    {"instruction": "天空是什么颜色？", "input": "", "output": "晴天时是蓝色。"},
    {"instruction": "一周有几天？", "input": "", "output": "一周有七天。"},
    {"instruction": "水在几度结冰？", "input": "", "output": "零摄氏度。"},
    {"instruction": "中国的首都是哪里？", "input": "", "output": "北京。"},
]
LONG_INSTRUCTION = "请详细介绍一些常识。"


def long_record(output: str) -> dict[str, str]:
    return {"instruction": LONG_INSTRUCTION, "input": "", "output": output}


def overlong_run(tmp_path: Path, mode: str, output: str, max_length: int = 96):
    data = write_jsonl(tmp_path / f"long-{mode}.jsonl", [*SHORT, long_record(output)])
    run_dir = tmp_path / f"run-{mode}"
    results = prepare(
        run_dir,
        [data],
        "data.test_size=1",
        "data.val_size=1",
        f"data.max_length={max_length}",
        f"data.overlong={mode}",
    )
    rows = [r for s in SPLITS for r in read_split(run_dir, s)]
    return results, rows, read_split(run_dir, "rejected")


def common_long_text() -> str:
    return "".join(r["output"] for r in sample_records(6, start=10))


def test_overlong_drop_goes_to_rejected(tmp_path):
    results, rows, rejected = overlong_run(tmp_path, "drop", common_long_text())
    assert [(r["reason"], r["line"], r["record"]["instruction"]) for r in rejected] == [
        ("too_long", 6, LONG_INSTRUCTION)
    ]
    assert results["dropped"] == {"too_long": 1} and results["truncated"] == 0
    assert LONG_INSTRUCTION not in {r["instruction"] for r in rows}
    assert results["records_kept"] == len(SHORT)


def test_overlong_truncate_keeps_a_shorter_answer(tmp_path):
    original = common_long_text()
    results, rows, rejected = overlong_run(tmp_path, "truncate", original)
    assert results["truncated"] > 0
    assert results["records_kept"] == len(SHORT) + 1 and not rejected
    (kept,) = [r for r in rows if r["instruction"] == LONG_INSTRUCTION]
    assert 0 < len(kept["output"]) < len(original)
    assert original.startswith(kept["output"])
    assert kept["completion"].endswith("</s>")
    assert kept["n_tokens"] <= 96
    assert all(r["n_tokens"] <= 96 for r in rows)


def test_truncate_with_characters_outside_the_vocabulary(tmp_path):
    rare = "".join(chr(0x3400 + (i * 7) % 600) for i in range(300))  # CJK Extension A
    results, rows, _ = overlong_run(tmp_path, "truncate", rare, max_length=128)
    assert results["truncated"] == 1
    (kept,) = [r for r in rows if r["instruction"] == LONG_INSTRUCTION]
    assert "\ufffd" not in kept["output"]
    assert rare.startswith(kept["output"])
    assert kept["n_tokens"] <= 128
