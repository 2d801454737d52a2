"""The data preparation stage (`python run.py prepare`, trainer/prepare_data.py) on the tiny config.

Bad input goes through the command line (`run.main`, in this process; a few cases also as a real
subprocess) because the exit code and the printed message are the behaviour under test. Everything
else runs the stage in-process with `run_stage`, which writes `prepare.json` as the CLI does.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stages import by_name
from trainer.config import load_config
from trainer.data_formats import clean_text
from trainer.errors import UserError
from trainer.pipeline import run_stage
from trainer.runfolder import RunDir

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"
GENERAL = ROOT / "data" / "sample" / "zh_general.jsonl"
IDENTITY = ROOT / "data" / "sample" / "zh_identity.jsonl"
BUNDLED = [GENERAL, IDENTITY]
SPLITS = ("train", "val", "test")
CONTENT = ("instruction", "input", "output", "prompt", "completion")


# ---------------------------------------------------------------------------------------------
# helpers


def sample_records(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Distinct, short, well-formed records from the bundled general data (no identity records)."""
    lines = [line for line in GENERAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(line) for line in lines[start : start + n]]


def jsonl_line(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False)


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(jsonl_line(r) + "\n" for r in records), encoding="utf-8")
    return path


def files_override(files: list[Path | str]) -> str:
    # JSON is YAML flow syntax, so paths with any character survive the override parser.
    return "data.files=" + json.dumps([str(f) for f in files], ensure_ascii=False)


def prepare(run_dir: Path, files: list[Path | str] | None = None, *overrides: str) -> dict[str, Any]:
    """Run the prepare stage in-process on the tiny config; return its results."""
    extra = [files_override(files)] if files else []
    cfg = load_config(TINY, [*extra, *overrides])
    return run_stage(by_name("prepare"), cfg, RunDir(run_dir)).results


def read_split(run_dir: Path, name: str) -> list[dict[str, Any]]:
    text = (run_dir / "data" / f"{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def split_contents(run_dir: Path) -> dict[str, list[tuple[str, ...]]]:
    return {s: [tuple(row[k] for k in CONTENT) for row in read_split(run_dir, s)] for s in SPLITS}


@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str


def cli_in_process(args: list[str]) -> CliResult:
    import run as cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(args)
    return CliResult(rc, out.getvalue(), err.getvalue())


def cli_subprocess(args: list[str]) -> CliResult:
    env = {**os.environ, "FT_NO_BOOTSTRAP": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def prepare_args(run_dir: Path, overrides: list[str], config: Path = TINY) -> list[str]:
    return ["prepare", "--config", str(config), "--run-dir", str(run_dir), *overrides]


# ---------------------------------------------------------------------------------------------
# a. bad input: one message with file, line/field and a fix; exit 2; no traceback; no finished run


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


# ---------------------------------------------------------------------------------------------
# b. bad records among good ones: counted in rejected.jsonl, or fatal with data.strict=true


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


# ---------------------------------------------------------------------------------------------
# c. the bundled data through the tiny config


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


# ---------------------------------------------------------------------------------------------
# d. cleaning


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


# ---------------------------------------------------------------------------------------------
# e. over-long records: dropped (to rejected.jsonl) or truncated


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


# ---------------------------------------------------------------------------------------------
# e. placeholders of other toolkits, the drop warning, conversation formats


def _all_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [row for s in SPLITS for row in read_split(run_dir, s)]


def test_name_placeholder_of_other_toolkits_is_filled(tmp_path):
    identity = {"instruction": "你是谁？", "input": "", "output": "我是{{name}}，由{{author}}开发的助手。"}
    data = write_jsonl(tmp_path / "identity.jsonl", [identity, *sample_records(20)])
    prepare(tmp_path / "run", [data], "data.assistant_name=小帮", "data.author=测试组")
    rows = _all_rows(tmp_path / "run")
    assert not any("{{" in row[k] for row in rows for k in CONTENT)
    filled = [row for row in rows if row["instruction"] == "你是谁？"]
    assert filled and filled[0]["output"] == "我是小帮，由测试组开发的助手。" and filled[0]["identity"]
    assert "我是小帮" in filled[0]["completion"]


def test_leftover_placeholder_is_rejected_with_record_field_and_placeholder(tmp_path):
    leftover = {"instruction": "你是哪家公司的？", "input": "", "output": "我来自{{company}}。"}
    data = write_jsonl(tmp_path / "mixed.jsonl", [*sample_records(20), leftover])
    results = prepare(tmp_path / "run", [data])
    assert results["dropped"] == {"placeholder": 1}
    assert not any("{{" in row[k] for row in _all_rows(tmp_path / "run") for k in CONTENT)
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
    rows = {row["instruction"]: row for row in _all_rows(tmp_path / "run")}
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
