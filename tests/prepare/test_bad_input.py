"""The prepare stage (`python run.py prepare`, trainer/prepare_data.py) on bad input: one message with
file, line/field and a fix; exit 2; no traceback; no finished run.

Bad input goes through the command line (`run.main`, in this process; a few cases also as a real
subprocess) because the exit code and the printed message are the behaviour under test."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.prepare.helpers import (
    SPLITS,
    TINY,
    CliResult,
    cli_in_process,
    cli_subprocess,
    files_override,
    jsonl_line,
    prepare_args,
)

GOOD = jsonl_line({"instruction": "中国的首都是哪里？", "input": "", "output": "中国的首都是北京。"})
GOOD2 = jsonl_line({"instruction": "一年有几个月？", "input": "", "output": "一年有十二个月。"})
GOOD3 = jsonl_line({"instruction": "水的化学式是什么？", "input": "", "output": "水的化学式是H2O。"})


@dataclass
class Bad:
    """One broken input: a data file (bytes), overrides, or a config file; what the message says."""

    expect: list[str]
    file_name: str | None = None
    content: bytes | None = None  # None with a file_name: the file does not exist
    overrides: list[str] = field(default_factory=list)
    config_text: str | None = None  # a YAML file passed as --config instead of configs/tiny.yaml

    def setup(self, tmp_path: Path) -> tuple[list[str], Path | None, Path, list[str]]:
        """(cli args, data or config file named in the message, run dir, other needles)."""
        run_dir = tmp_path / "run"
        named: Path | None = None
        overrides = list(self.overrides)
        config = TINY
        if self.file_name is not None:
            named = tmp_path / self.file_name
            if self.content is not None:
                named.write_bytes(self.content)
            overrides.insert(0, files_override([named]))
        if self.config_text is not None:
            config = named = tmp_path / "broken.yaml"
            config.write_text(self.config_text, encoding="utf-8")
        return prepare_args(run_dir, overrides, config), named, run_dir, self.expect


def _lines(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")


BAD_INPUTS: dict[str, Bad] = {
    "invalid-json": Bad(
        ["line 3", "column"],
        "records.json",
        b'[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c" "output": "d"}\n]\n',
    ),
    "jsonl-bad-line-3": Bad(
        ["line 3"], "records.jsonl", _lines(GOOD, GOOD2, '{"instruction": "坏的一行", "output": ', GOOD3)
    ),
    "utf8-bom": Bad(["BOM"], "bom.jsonl", b"\xef\xbb\xbf" + _lines(GOOD, GOOD2)),
    "gbk": Bad(["GBK", "iconv"], "gbk.jsonl", (GOOD + "\n" + GOOD2 + "\n").encode("gbk")),
    "record-missing-output": Bad(
        ["line 1", "'output'"], "one.jsonl", _lines('{"instruction": "你好", "input": ""}')
    ),
    "non-string-field": Bad(
        ["'output'", "string"], "five.jsonl", _lines('{"instruction": "你好", "input": "", "output": 5}')
    ),
    "empty-file": Bad(["empty"], "empty.jsonl", b""),
    "all-duplicates": Bad(["duplicate"], "dups.jsonl", _lines(*[GOOD] * 5)),
    "only-blank-outputs": Bad(
        ["'output'", "empty"],
        "blank.jsonl",
        _lines(
            '{"instruction": "问题一", "input": "", "output": "   "}',
            '{"instruction": "问题二", "input": "", "output": "\\u3000\\n\\t"}',
            '{"instruction": "问题三", "input": "", "output": ""}',
        ),
    ),
    "csv-wrong-header": Bad(["instruction", "output"], "qa.csv", "question,answer\n问,答\n".encode()),
    "missing-file": Bad(["not found"], "does-not-exist.jsonl", None),
    "json-object-not-array": Bad(
        ["array"], "object.json", b'{"instruction": "a", "input": "", "output": "b"}\n'
    ),
    "unknown-file-type": Bad([".txt"], "records.txt", _lines(GOOD)),
    "unknown-config-key": Bad(["'data.fies'"], overrides=["data.fies=[a.jsonl]"]),
    "split-ratios-over-1": Bad(
        ["data.val_size", "data.test_size"], overrides=["data.val_size=0.6", "data.test_size=0.5"]
    ),
    "bad-yaml-config": Bad(["line"], config_text="data:\n  max_length: [256\n  seed: 1\n"),
    "wrong-type-override": Bad(["'train.epochs'"], overrides=["train.epochs=abc"]),
}

BAD_INPUT_BUGS: dict[str, str] = {}


def _bad_params(names: list[str]) -> list[Any]:
    params = []
    for name in names:
        marks = (
            [pytest.mark.xfail(strict=True, reason=BAD_INPUT_BUGS[name])] if name in BAD_INPUT_BUGS else []
        )
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def check_bad_input(result: CliResult, named: Path | None, run_dir: Path, expect: list[str]) -> None:
    both = result.stdout + result.stderr
    assert "Traceback" not in both, both
    assert result.rc == 2, both
    assert result.stderr.count("error:") == 1, result.stderr
    assert result.stderr.count("How to fix") == 1, result.stderr
    if named is not None:
        assert named.name in result.stderr
    for needle in expect:
        assert needle in result.stderr, f"{needle!r} not in: {result.stderr}"
    record_path = run_dir / "prepare.json"
    if record_path.exists():
        assert json.loads(record_path.read_text(encoding="utf-8"))["status"] == "failed"
    for split in SPLITS:
        assert not (run_dir / "data" / f"{split}.jsonl").exists(), split


def test_bad_input_table_has_every_required_case():
    assert len(BAD_INPUTS) >= 13


@pytest.mark.parametrize("name", _bad_params(list(BAD_INPUTS)))
def test_bad_input_is_one_clear_message(name, tmp_path):
    args, named, run_dir, expect = BAD_INPUTS[name].setup(tmp_path)
    check_bad_input(cli_in_process(args), named, run_dir, expect)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", _bad_params(["jsonl-bad-line-3", "gbk", "record-missing-output", "unknown-config-key"])
)
def test_bad_input_through_a_real_process(name, tmp_path):
    """The same checks on `python run.py prepare` as a separate process: real exit code and stderr."""
    args, named, run_dir, expect = BAD_INPUTS[name].setup(tmp_path)
    check_bad_input(cli_subprocess(args), named, run_dir, expect)


def test_failed_prepare_is_recorded_as_failed(tmp_path):
    args, _, run_dir, _ = BAD_INPUTS["jsonl-bad-line-3"].setup(tmp_path)
    assert cli_in_process(args).rc == 2
    record = json.loads((run_dir / "prepare.json").read_text(encoding="utf-8"))
    assert record["status"] == "failed" and "line 3" in record["error"]
