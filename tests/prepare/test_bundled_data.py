"""The bundled data (data/sample) through the prepare stage on the tiny config: counts, splits, identity
records, the prompt format, placeholders, determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.prepare.helpers import (
    BUNDLED,
    IDENTITY,
    SPLITS,
    prepare,
    read_split,
    split_contents,
)


@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("bundled")
    return run_dir, prepare(run_dir)


def test_counts_add_up(bundled):
    run_dir, results = bundled
    lines_in = sum(
        1 for path in BUNDLED for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    )
    assert results["records_in"] == lines_in
    assert sum(results["splits"].values()) + sum(results["dropped"].values()) == results["records_in"]
    assert sum(results["splits"].values()) == results["records_kept"]
    for split in SPLITS:
        assert len(read_split(run_dir, split)) == results["splits"][split] > 0
    assert len(read_split(run_dir, "rejected")) == sum(results["dropped"].values())
    # tiny.yaml: test_size is a count, val_size a ratio
    assert results["splits"]["test"] == 12
    assert results["splits"]["val"] == round(0.05 * results["records_kept"])


def test_no_record_in_two_splits(bundled):
    run_dir, _ = bundled
    seen: dict[tuple[str, str, str], str] = {}
    ids: set[str] = set()
    for split in SPLITS:
        for row in read_split(run_dir, split):
            key = (row["instruction"], row["input"], row["output"])
            assert key not in seen, f"{key[0]!r} in {seen.get(key)} and {split}"
            seen[key] = split
            assert row["id"] not in ids
            ids.add(row["id"])


def test_identity_records_in_every_split(bundled):
    run_dir, results = bundled
    for split in SPLITS:
        identity = [row for row in read_split(run_dir, split) if "小知" in row["output"]]
        assert identity, f"no identity record in {split}"
        assert results["identity_records"][split] == len(identity)


def test_llama2_chat_format_applied(bundled):
    run_dir, results = bundled
    assert results["prompt_format"] == "llama2"
    for split in SPLITS:
        for row in read_split(run_dir, split):
            assert row["prompt"].startswith("[INST] <<SYS>>\n你是小知。\n<</SYS>>\n\n"), row["prompt"]
            assert row["prompt"].endswith("[/INST]")
            assert row["instruction"] in row["prompt"]
            assert row["completion"].endswith("</s>")
            assert row["output"] in row["completion"]
            assert row["n_tokens"] <= results["max_length"]


def test_placeholders_substituted_everywhere(bundled):
    run_dir, _ = bundled
    for path in sorted((run_dir / "data").glob("*.jsonl")):
        text = path.read_text(encoding="utf-8")
        assert "{{" not in text and "{assistant_name}" not in text, path.name
    # The saved format's system prompt is filled in too (its Ollama template keeps Go {{ .System }}).
    saved = json.loads((run_dir / "prompt_format.json").read_text(encoding="utf-8"))
    assert saved["system"] == "你是小知。"
    identity_rows = [r for s in SPLITS for r in read_split(run_dir, s) if "小知" in r["output"]]
    assert any("本地微调团队" in r["output"] for r in identity_rows)  # {{author}}


def test_assistant_name_override_reaches_the_data(tmp_path):
    run_dir = tmp_path / "run"
    prepare(run_dir, [IDENTITY], "data.assistant_name=小明", "data.author=测试组")
    rows = [r for s in SPLITS for r in read_split(run_dir, s)]
    assert sum("小明" in r["output"] for r in rows) >= len(rows) // 2
    assert not any("小知" in r["output"] or "{{" in r["output"] for r in rows)
    assert all(r["prompt"].startswith("[INST] <<SYS>>\n你是小明。") for r in rows)


def test_split_is_deterministic_for_a_seed(bundled, tmp_path):
    run_dir, _ = bundled
    again = tmp_path / "again"
    prepare(again)
    for split in SPLITS:
        name = f"data/{split}.jsonl"
        assert (again / name).read_bytes() == (run_dir / name).read_bytes(), split
    other = tmp_path / "other-seed"
    prepare(other, None, "data.seed=7")
    assert split_contents(other)["test"] != split_contents(run_dir)["test"]
    assert sorted(r for s in SPLITS for r in split_contents(other)[s]) == sorted(
        r for s in SPLITS for r in split_contents(run_dir)[s]
    )


def test_identity_test_size_holds_out_that_many_identity_questions(bundled, tmp_path):
    run_dir, results = bundled
    proportional = results["identity_records"]["test"]
    run = tmp_path / "identity-10"
    res = prepare(run, None, "data.identity_test_size=10")
    assert proportional < 10
    assert res["splits"]["test"] == results["splits"]["test"] == 12  # same test size
    assert res["identity_records"]["test"] == 10
    test = read_split(run, "test")
    assert sum(r["identity"] for r in test) == 10
    assert res["identity_records"]["train"] > 0  # training still sees the name
    assert res["identity_records"]["val"] > 0  # and the validation loss covers identity answers
    everything = sorted(r for s in SPLITS for r in split_contents(run)[s])
    assert everything == sorted(r for s in SPLITS for r in split_contents(run_dir)[s])  # nothing lost


def test_identity_test_size_never_takes_every_identity_record(tmp_path):
    res = prepare(tmp_path / "run", None, "data.identity_test_size=0.99", "data.test_size=40")
    assert (
        0
        < res["identity_records"]["test"]
        < res["identity_records"]["test"] + res["identity_records"]["train"]
    )
    assert res["identity_records"]["train"] + res["identity_records"]["val"] >= 1
