"""The training-data formats that `python run.py prepare` (trainer/prepare_data.py) reads.

Files: JSON array, JSONL or CSV, UTF-8 without BOM (`load_files`). Records: Alpaca
(instruction/input/output), ShareGPT (`conversations` with `from`/`value`) or OpenAI-style
`messages` (`role`/`content`), checked by `validate` into a `Sample`, then filled
({{name}}, {{assistant_name}}, {{author}}) and cleaned by `clean_sample`, and turned into the
prepared row by `as_row`. A broken file stops with a `UserError` naming the file, line and fix; a
bad record becomes a `Rejection` (reason, detail) for `data/rejected.jsonl`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.config import data_path
from trainer.errors import UserError

FIELDS = ("instruction", "input", "output")


@dataclass
class RawRecord:
    source: str
    line: int  # line in the file (JSONL/CSV) or 1-based record number (JSON array)
    data: Any


@dataclass
class Rejection:
    source: str
    line: int
    reason: str
    detail: str
    record: Any

    def as_row(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "line": self.line,
            "reason": self.reason,
            "detail": self.detail,
            "record": self.record,
        }


@dataclass
class Loaded:
    records: list[RawRecord] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)


def _decode(path: Path, raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raise UserError(
            f"{path}: line 1: the file starts with a UTF-8 byte-order mark (BOM).",
            fix="save it as UTF-8 without BOM (e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`)",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        hint = ""
        try:
            raw.decode("gb18030")
            hint = " It decodes as GBK/GB18030, a common Chinese Windows encoding."
        except UnicodeDecodeError:
            pass
        raise UserError(
            f"{path}: line {line}: the file is not valid UTF-8 (byte {exc.start}).{hint}",
            fix=f"convert it to UTF-8, e.g. `iconv -f GB18030 -t UTF-8 {path.name} > fixed.jsonl`",
        ) from None


def _read_file(path: Path) -> tuple[str, list[RawRecord]]:
    if not path.is_file():
        raise UserError(
            f"{path}: data file not found.",
            fix="check data.files in your config (paths are relative to the project root)",
        )
    text = _decode(path, path.read_bytes())
    if not text.strip():
        raise UserError(f"{path}: the file is empty.", fix="add Alpaca records (instruction, input, output)")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl", _read_jsonl(path, text)
    if suffix == ".json":
        return "json", _read_json_array(path, text)
    if suffix == ".csv":
        return "csv", _read_csv(path, text)
    raise UserError(
        f"{path}: unknown file type '{suffix}'.",
        fix="use .json (an array of records), .jsonl (one record per line) or .csv",
    )


def _read_jsonl(path: Path, text: str) -> list[RawRecord]:
    records = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028/U+2029 unescaped.
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(RawRecord(str(path), number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}: line {number}, column {exc.colno}: invalid JSON ({exc.msg}).",
                fix="each line must be one complete JSON object like "
                '{"instruction": "...", "input": "", "output": "..."}',
            ) from None
    return records


def _read_json_array(path: Path, text: str) -> list[RawRecord]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg}).",
            fix="the file must be one JSON array of records; for one record per line use .jsonl",
        ) from None
    if not isinstance(data, list):
        raise UserError(
            f"{path}: line 1: the top level is a JSON {type(data).__name__}, not an array of records.",
            fix='wrap the records in [ ... ], e.g. [{"instruction": "...", "output": "..."}]',
        )
    return [RawRecord(str(path), i, rec) for i, rec in enumerate(data, start=1)]


def _read_csv(path: Path, text: str) -> list[RawRecord]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [f for f in ("instruction", "output") if f not in header]
    if missing:
        raise UserError(
            f"{path}: line 1: CSV header {header} lacks column(s) {missing}.",
            fix="the first line must be `instruction,input,output` (input may be empty)",
        )
    records = []
    for row in reader:
        clean = {k.strip(): v for k, v in row.items() if k is not None}
        records.append(RawRecord(str(path), reader.line_num, clean))
    return records


def load_files(files: list[str]) -> Loaded:
    loaded = Loaded()
    missing = [f for f in files if not data_path(f).is_file()]
    if missing:
        raise UserError(
            f"data file(s) not found: {', '.join(missing)}.",
            fix="check data.files in your config (paths are relative to the project root)",
        )
    for name in files:
        path = data_path(name)
        kind, records = _read_file(path)
        loaded.records.extend(records)
        loaded.inputs.append({"path": str(name), "format": kind, "records": len(records)})
    return loaded


_SPACES = re.compile(r"[ \t\u3000\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """NFC, unified newlines, runs of spaces collapsed, at most one blank line, trimmed."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


# Speaker names of the two conversation formats (ShareGPT `from`, OpenAI-style `role`).
_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}
_CONVERSATION_KEYS = {"conversations": ("from", "value"), "messages": ("role", "content")}
# Turns of tool-call conversations (ShareGPT function_call / observation, OpenAI tool): not supported.
_TOOL_ROLES = {"function_call", "observation", "function", "tool", "tool_call", "tool_calls"}


@dataclass
class Sample:
    """One valid record: its texts by field path (for messages that name the field) and how they
    form a conversation."""

    kind: str  # alpaca | sharegpt | messages
    texts: dict[str, str]  # field path -> text, e.g. "output" or "conversations[3].value"
    turns: list[tuple[str, str]]  # (user field, answer field) paths, in order
    system: str | None = None  # field path of the record's own system prompt


def _validate_alpaca(rec: RawRecord, data: dict[str, Any]) -> tuple[Sample | None, Rejection | None]:
    problems = []
    texts: dict[str, str] = {}
    for name in FIELDS:
        value = data.get(name, "" if name == "input" else None)
        if value is None:
            problems.append(f"field '{name}' is missing")
        elif not isinstance(value, str):
            problems.append(f"field '{name}' must be a string, got {type(value).__name__} {value!r:.40}")
        else:
            texts[name] = value
    if problems:
        return None, Rejection(rec.source, rec.line, "invalid_record", "; ".join(problems), data)
    return Sample("alpaca", texts, [("instruction", "output")]), None


def _validate_conversation(
    rec: RawRecord, data: dict[str, Any], key: str
) -> tuple[Sample | None, Rejection | None]:
    role_key, text_key = _CONVERSATION_KEYS[key]
    kind = "sharegpt" if key == "conversations" else "messages"
    messages = data[key]

    def bad(detail: str) -> tuple[None, Rejection]:
        return None, Rejection(rec.source, rec.line, "invalid_record", detail, data)

    if not isinstance(messages, list) or not messages:
        return bad(f"field '{key}' must be a non-empty list of {{{role_key}, {text_key}}} objects")
    sample = Sample(kind, {}, [])
    expected, user = "user", ""
    for i, msg in enumerate(messages):
        where = f"{key}[{i}]"
        if not isinstance(msg, dict) or not isinstance(msg.get(text_key), str):
            return bad(f"{where} must be an object with a string '{text_key}'")
        role = _ROLES.get(str(msg.get(role_key, "")).lower())
        if role is None and str(msg.get(role_key, "")).lower() in _TOOL_ROLES:
            return bad(
                f"{where}.{role_key} is {msg.get(role_key)!r}: tool-call conversations are not supported "
                "(only plain question/answer turns); remove the record or keep only its text turns"
            )
        if role is None:
            return bad(f"{where}.{role_key} is {msg.get(role_key)!r}; use one of {sorted(_ROLES)}")
        path = f"{where}.{text_key}"
        sample.texts[path] = msg[text_key]
        if role == "system" and i == 0:
            sample.system = path
        elif role != expected:
            return bad(f"{where}.{role_key} is {msg.get(role_key)!r} where a {expected} turn is expected")
        elif role == "user":
            user, expected = path, "assistant"
        else:
            sample.turns.append((user, path))
            expected = "user"
    if expected == "assistant" or not sample.turns:
        return bad(f"field '{key}' must end with an assistant turn (the answer to train on)")
    return sample, None


def validate(rec: RawRecord) -> tuple[Sample | None, Rejection | None]:
    """The record as a Sample of its format (Alpaca, ShareGPT `conversations`, `messages`), or why not."""
    data = rec.data
    if not isinstance(data, dict):
        return None, Rejection(
            rec.source,
            rec.line,
            "invalid_record",
            f"a record must be an object, got {type(data).__name__}",
            data,
        )
    for key in _CONVERSATION_KEYS:
        if key in data:
            return _validate_conversation(rec, data, key)
    return _validate_alpaca(rec, data)


# Placeholders filled from the config: {{name}} is the identity files' spelling in other toolkits.
_UNFILLED = re.compile(r"\{\{[^{}]*\}\}")


def fill_placeholders(text: str, assistant_name: str, author: str) -> str:
    """`text` with {{assistant_name}} / {{name}} and {{author}} filled (data.assistant_name, data.author):
    the training data's rule, also used for the identity probe's questions."""
    for placeholder, value in (
        ("{{assistant_name}}", assistant_name),
        ("{{name}}", assistant_name),
        ("{{author}}", author),
    ):
        text = text.replace(placeholder, value)
    return text


def clean_sample(rec: RawRecord, sample: Sample, dc: Any) -> tuple[bool, Rejection | None]:
    """Fill placeholders and clean every text in place; (normalized?, why rejected)."""
    normalized = False
    for path, raw in sample.texts.items():
        filled = fill_placeholders(raw, dc.assistant_name, dc.author)
        left = _UNFILLED.search(filled)
        if left:
            return normalized, Rejection(
                rec.source,
                rec.line,
                "placeholder",
                f"field '{path}' has the unfilled placeholder {left.group(0)} "
                "(only {{name}}, {{assistant_name}} and {{author}} are filled, from data.assistant_name "
                "and data.author)",
                rec.data,
            )
        sample.texts[path] = clean_text(filled)
        normalized |= filled == raw and sample.texts[path] != raw
    answers = {a for _, a in sample.turns}
    for path in [*(u for u, _ in sample.turns), *answers]:
        if not sample.texts[path]:
            reason = "empty_output" if path in answers else "empty_instruction"
            return normalized, Rejection(rec.source, rec.line, reason, f"field '{path}' is empty", rec.data)
    return normalized, None


def as_row(sample: Sample) -> dict[str, Any]:
    """The prepared record: instruction/input/output of the last turn, earlier turns as `history`,
    the record's own system prompt, and the prompt/completion texts of the last answer."""
    t = sample.texts
    if sample.kind == "alpaca":
        row: dict[str, Any] = {"instruction": t["instruction"], "input": t["input"], "output": t["output"]}
    else:
        user, answer = sample.turns[-1]
        row = {"instruction": t[user], "input": "", "output": t[answer]}
        row["history"] = [[t[u], t[a]] for u, a in sample.turns[:-1]]
        if sample.system is not None:
            row["system"] = t[sample.system]
    return row
