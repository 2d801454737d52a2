"""The prepare stage's drop warning: more than a fifth of the records dropped warns with share, cause and fix."""

from __future__ import annotations

import json

from tests.prepare.helpers import (
    cli_in_process,
    files_override,
    prepare,
    prepare_args,
    sample_records,
    write_jsonl,
)


def test_dropping_more_than_a_fifth_warns_with_share_cause_and_fix(tmp_path):
    records = sample_records(20)
    data = write_jsonl(tmp_path / "dups.jsonl", records + records[:6])  # 6 of 26 = 23 % duplicates
    result = cli_in_process(prepare_args(tmp_path / "run", [files_override([data])]))
    assert result.rc == 0, result.stderr
    warning = json.loads((tmp_path / "run" / "prepare.json").read_text())["results"]["drop_warning"]
    assert warning["dropped"] == 6 and warning["records_in"] == 26 and warning["share_pct"] == 23.1
    assert warning["main_cause"] == "duplicate" and "data.files" in warning["fix"]
    assert "6 of 26 records (23.1%) were dropped" in result.stderr + result.stdout
    assert "warning" in result.stdout and "training uses only 20" in result.stdout


def test_too_long_drops_warn_with_the_max_length_fix(tmp_path):
    long = [{"instruction": f"第{i}个长问题", "input": "", "output": "很长的回答。" * 200} for i in range(8)]
    results = prepare(tmp_path / "run", [write_jsonl(tmp_path / "d.jsonl", sample_records(20) + long)])
    warning = results["drop_warning"]
    assert warning and warning["main_cause"] == "too_long"
    assert "data.max_length=1024" in warning["fix"] and "data.overlong=truncate" in warning["fix"]
    assert results["warnings"][0] == warning["message"]  # first; small-data warnings follow


def test_a_few_drops_do_not_warn(tmp_path):
    records = sample_records(20)
    results = prepare(tmp_path / "run", [write_jsonl(tmp_path / "d.jsonl", records + records[:2])])
    assert results["dropped"] == {"duplicate": 2}
    assert results["drop_warning"] is None
    assert not any("dropped" in w for w in results["warnings"])  # 20 records still warn as small data
