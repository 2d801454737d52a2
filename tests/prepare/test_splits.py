"""Split sizes for small data, train/test leakage and tool-call records in the prepare stage
(trainer/prepare_data.py, trainer/leakage.py) on the tiny config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.prepare.helpers import TINY, files_override, prepare, read_split, sample_records, write_jsonl
from trainer import evaluate, leakage, near_duplicates
from trainer.config import load_config
from trainer.errors import UserError
from trainer.runfolder import RunDir

DEFAULT_SPLIT = ("data.test_size=30", "data.val_size=0.08")  # configs/default.yaml


def sharegpt(record: dict[str, str]) -> dict[str, Any]:
    return {
        "conversations": [
            {"from": "human", "value": record["instruction"]},
            {"from": "gpt", "value": record["output"]},
        ]
    }


def tool_call_record(i: int) -> dict[str, Any]:
    """A ShareGPT tool-call conversation as in LLaMA-Factory's glaive_toolcall demo."""
    return {
        "conversations": [
            {"from": "human", "value": f"帮我查一下第{i}号订单的状态。"},
            {"from": "function_call", "value": json.dumps({"name": "get_order", "arguments": {"id": i}})},
            {"from": "observation", "value": json.dumps({"status": "shipped"})},
            {"from": "gpt", "value": "您的订单已发货。"},
        ],
        "tools": json.dumps([{"name": "get_order"}]),
    }


def test_36_usable_records_leave_most_for_training(tmp_path: Path) -> None:
    records = [sharegpt(r) for r in sample_records(36)] + [tool_call_record(i) for i in range(12)]
    data = write_jsonl(tmp_path / "toolcall_zh.jsonl", records)
    run_dir = tmp_path / "run"
    results = prepare(run_dir, [data], *DEFAULT_SPLIT)
    assert results["records_kept"] == 36
    splits = results["splits"]
    assert splits["train"] >= 24
    assert splits["test"] <= 4 and splits["val"] <= 4 and splits["test"] >= 3
    cap = results["eval_split_cap"]
    assert cap["capped"] is True and cap["test_requested"] == 30 and cap["max_share"] == 0.1
    warnings = "\n".join(results["warnings"])
    assert "data.max_eval_share" in warnings
    assert f"only {splits['train']} training records" in warnings and "add more distinct" in warnings
    # Every tool-call record is rejected with one clear message naming the turn and why.
    rejected = read_split(run_dir, "rejected")
    assert len(rejected) == 12
    assert all("tool-call conversations are not supported" in r["detail"] for r in rejected)
    assert all("conversations[1].from is 'function_call'" in r["detail"] for r in rejected)


def test_enough_data_keeps_the_requested_sizes(tmp_path: Path) -> None:
    results = prepare(tmp_path / "run", None, *DEFAULT_SPLIT)  # the bundled data, ~360 records
    assert results["splits"]["test"] == 30 - results["leakage"]["found"]["test"]
    assert results["eval_split_cap"]["capped"] is False
    assert not any("training records" in w for w in results["warnings"])


def planted(tmp_path: Path) -> tuple[Path, int]:
    """60 records of which 20 are near copies (a changed prefix or punctuation, another answer)."""
    base = sample_records(40)
    copies = []
    for i, r in enumerate(base[:20]):
        question = r["instruction"].rstrip("。？?") + ("？" if i % 2 else "")
        question = ("请问，" + question) if i % 3 == 0 else question
        copies.append(
            {"instruction": question, "input": r["input"], "output": r["output"] + "（另一种说法）"}
        )
    return write_jsonl(tmp_path / "planted.jsonl", base + copies), len(copies)


SPLIT_WIDE = ("data.test_size=18", "data.val_size=6", "data.max_eval_share=0.3")


def _leaked_in(run_dir: Path, split: str) -> list[near_duplicates.Match]:
    train = [leakage.question_text(r) for r in read_split(run_dir, "train")]
    return near_duplicates.find_matches([leakage.question_text(r) for r in read_split(run_dir, split)], train)


def test_planted_near_duplicates_are_found_counted_and_moved_out_of_test(tmp_path: Path) -> None:
    data, _ = planted(tmp_path)
    run_dir = tmp_path / "run"
    results = prepare(run_dir, [data], *SPLIT_WIDE)
    lk = results["leakage"]
    found = lk["found"]["test"] + lk["found"]["val"]
    assert found > 0 and lk["moved_to_train"] == found
    assert lk["exact"] + lk["near"] == found
    assert lk["threshold"] == near_duplicates.THRESHOLD and "Jaccard" in lk["method"]
    assert 0 < len(lk["examples"]) <= 5
    pairs = read_split(run_dir, "leakage")
    assert len(pairs) == found
    assert all(p["similarity"] >= near_duplicates.THRESHOLD for p in pairs)
    # Nothing in test or val is a copy of a training question any more; nothing was lost.
    assert _leaked_in(run_dir, "test") == [] and _leaked_in(run_dir, "val") == []
    # The splits were refilled from train records without a copy: sizes kept, nothing lost.
    assert lk["refilled"] == {"test": lk["found"]["test"], "val": lk["found"]["val"]}
    assert (results["splits"]["test"], results["splits"]["val"]) == (18, 6)
    assert sum(results["splits"].values()) == results["records_kept"] == 60
    assert any("also occur in train" in w for w in results["warnings"])


def test_templated_questions_moved_out_never_empty_an_evaluation_split(tmp_path: Path) -> None:
    """Questions from one template ("请计算第12组练习题：把数字12和数字0相加…") are near copies: the
    evaluation splits keep only those without a copy in train, or say why they cannot."""
    templated = [
        {
            "instruction": f"请计算第{i}组练习题：把数字{i}和数字0相加，结果等于几？",
            "input": "",
            "output": f"{i}。",
        }
        for i in range(10, 50)
    ]
    data = write_jsonl(tmp_path / "templated.jsonl", templated + sample_records(40))
    run_dir = tmp_path / "run"
    results = prepare(run_dir, [data], "data.test_size=8", "data.val_size=8", "data.max_eval_share=0.2")
    assert results["leakage"]["found"]["test"] + results["leakage"]["found"]["val"] > 0
    assert results["splits"]["test"] == 8 and results["splits"]["val"] == 8
    assert _leaked_in(run_dir, "test") == [] and _leaked_in(run_dir, "val") == []


def test_data_of_near_copies_only_is_a_clear_error(tmp_path: Path) -> None:
    templated = [
        {
            "instruction": f"请计算第{i}组练习题：把数字{i}和数字0相加，结果等于几？",
            "input": "",
            "output": f"{i}。",
        }
        for i in range(10, 50)
    ]
    data = write_jsonl(tmp_path / "templated.jsonl", templated)
    with pytest.raises(UserError, match="near copy in the train split") as err:
        prepare(tmp_path / "run", [data], "data.test_size=4", "data.val_size=4")
    assert "data.leakage=flag" in err.value.fix and "请计算第" in str(err.value)


def test_flagged_leaks_stay_in_test_but_out_of_the_metrics(tmp_path: Path) -> None:
    data, _ = planted(tmp_path)
    run_dir = tmp_path / "run"
    results = prepare(run_dir, [data], *SPLIT_WIDE, "data.leakage=flag")
    lk = results["leakage"]
    assert lk["mode"] == "flag" and lk["moved_to_train"] == 0
    test_rows = read_split(run_dir, "test")
    flagged = [r for r in test_rows if r.get("leak")]
    assert len(flagged) == lk["found"]["test"] > 0
    assert len(_leaked_in(run_dir, "test")) == len(flagged)
    cfg = load_config(TINY, [files_override([data]), *SPLIT_WIDE, "data.leakage=flag"])
    rows, _, excluded = evaluate._setup(cfg, RunDir(run_dir))
    assert excluded == len(flagged)
    assert {r["id"] for r in rows} == {r["id"] for r in test_rows if not r.get("leak")}


@pytest.mark.parametrize("value", ["0", "0.6"])
def test_max_eval_share_is_checked(value: str) -> None:
    with pytest.raises(UserError, match="max_eval_share"):
        load_config(TINY, [f"data.max_eval_share={value}"])
