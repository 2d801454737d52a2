"""Bad records among good ones in the prepare stage: counted in rejected.jsonl, or fatal with data.strict=true."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.prepare.helpers import (
    cli_in_process,
    files_override,
    jsonl_line,
    prepare,
    prepare_args,
    read_split,
    sample_records,
    write_jsonl,
)
from trainer.errors import UserError


def mixed_file(path: Path) -> Path:
    good = sample_records(30)
    lines = [
        *map(jsonl_line, good[:10]),  # lines 1-10
        jsonl_line({"instruction": "这条记录没有答案", "input": ""}),  # line 11: missing output
        *map(jsonl_line, good[10:19]),  # lines 12-20
        jsonl_line({"instruction": "输入不是字符串", "input": 42, "output": "答案"}),  # line 21
        jsonl_line(good[3]),  # line 22: duplicate of line 4
        *map(jsonl_line, good[19:27]),  # lines 23-30
        jsonl_line({"instruction": "空答案", "input": "", "output": " \u3000 "}),  # line 31
        *map(jsonl_line, good[27:30]),  # lines 32-34
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_records_are_rejected_with_reason_and_line(tmp_path):
    data = mixed_file(tmp_path / "mixed.jsonl")
    run_dir = tmp_path / "run"
    results = prepare(run_dir, [data])
    rejected = read_split(run_dir, "rejected")
    assert sorted((r["line"], r["reason"]) for r in rejected) == [
        (11, "invalid_record"),
        (21, "invalid_record"),
        (22, "duplicate"),
        (31, "empty_output"),
    ]
    assert all(Path(r["source"]).name == "mixed.jsonl" and r["detail"] for r in rejected)
    assert "'output'" in next(r["detail"] for r in rejected if r["line"] == 11)
    assert "'input'" in next(r["detail"] for r in rejected if r["line"] == 21)
    assert results["records_in"] == 34
    assert results["records_kept"] == 30
    assert results["records_kept"] + len(rejected) == results["records_in"]
    assert sum(results["splits"].values()) == results["records_kept"]
    assert results["dropped"] == {"invalid_record": 2, "duplicate": 1, "empty_output": 1}
    assert json.loads((run_dir / "prepare.json").read_text(encoding="utf-8"))["status"] == "completed"


def test_strict_stops_at_the_first_bad_record(tmp_path):
    data = mixed_file(tmp_path / "mixed.jsonl")
    run_dir = tmp_path / "run"
    result = cli_in_process(prepare_args(run_dir, [files_override([data]), "data.strict=true"]))
    assert result.rc == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "mixed.jsonl" in result.stderr and "line 11" in result.stderr
    assert "'output'" in result.stderr and "How to fix" in result.stderr
    assert not (run_dir / "data" / "train.jsonl").exists()


def test_strict_catches_a_bad_last_record(tmp_path):
    data = write_jsonl(tmp_path / "last.jsonl", [*sample_records(30), {"instruction": "x"}])
    with pytest.raises(UserError, match="line 31"):
        prepare(tmp_path / "run", [data], "data.strict=true")


def test_line_separator_inside_a_jsonl_string(tmp_path):
    records = sample_records(20)
    records[5]["output"] += "\u2028第二段。"
    data = write_jsonl(tmp_path / "u2028.jsonl", records)
    results = prepare(tmp_path / "run", [data], "data.test_size=2", "data.val_size=2")
    assert results["records_kept"] == 20
