"""Data preparation stage: `python run.py prepare` (also `python -m trainer.prepare_data`).

Reads the Alpaca files in `data.files` (JSON array, JSONL or CSV with instruction/input/output),
validates, cleans (trim, whitespace, Unicode NFC, drop empty answers), removes exact duplicates,
drops or truncates records longer than `data.max_length` tokens in the chat format, and splits
train/val/test by a seeded, identity-stratified shuffle. Writes in the run folder:
`data/train.jsonl`, `data/val.jsonl`, `data/test.jsonl`, `data/rejected.jsonl` (every dropped
record with its reason), `prompt_format.json`, and returns the counts that go into `prepare.json`.

A broken file (bad encoding, BOM, invalid JSON, wrong CSV header) stops the stage with one message
naming the file, line and fix. A bad record among good ones is counted in rejected.jsonl instead,
unless `data.strict=true`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
import statistics
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import prompt_format
from trainer.config import PipelineConfig, data_path
from trainer.errors import UserError
from trainer.models import load_tokenizer, resolve_base_model
from trainer.runfolder import ROOT, RunDir, write_jsonl

FIELDS = ("instruction", "input", "output")
MIN_TRAIN = 1


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


def _validate(rec: RawRecord) -> tuple[Sample | None, Rejection | None]:
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


def _fill(text: str, dc: Any) -> str:
    for placeholder, value in (
        ("{{assistant_name}}", dc.assistant_name),
        ("{{name}}", dc.assistant_name),
        ("{{author}}", dc.author),
    ):
        text = text.replace(placeholder, value)
    return text


def _clean_sample(rec: RawRecord, sample: Sample, dc: Any) -> tuple[bool, Rejection | None]:
    """Fill placeholders and clean every text in place; (normalized?, why rejected)."""
    normalized = False
    for path, raw in sample.texts.items():
        filled = _fill(raw, dc)
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


def _as_row(sample: Sample, fmt: prompt_format.PromptFormat) -> dict[str, Any]:
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


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0.0, "p50": 0, "p95": 0, "max": 0}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "mean": round(statistics.fmean(ordered), 1),
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def _split_sizes(n: int, val_size: float, test_size: float) -> tuple[int, int]:
    def size(v: float) -> int:
        if v == 0:
            return 0
        return int(v) if v >= 1 else max(1, round(v * n))

    return size(val_size), size(test_size)


def _stratified_order(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Shuffle each stratum (identity or not) and interleave them evenly, so any prefix has both."""
    rng = random.Random(seed)
    strata: dict[bool, list[dict[str, Any]]] = {}
    for row in rows:
        strata.setdefault(row["identity"], []).append(row)
    keyed = []
    for key in sorted(strata):
        group = strata[key]
        rng.shuffle(group)
        keyed.extend(((i + 0.5) / len(group), key, row) for i, row in enumerate(group))
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [row for _, _, row in keyed]


def _describe_rejections(rejections: list[Rejection], limit: int = 5) -> str:
    lines = [f"  {r.source}: record at line {r.line}: {r.reason}: {r.detail}" for r in rejections[:limit]]
    if len(rejections) > limit:
        lines.append(f"  ... and {len(rejections) - limit} more (see data/rejected.jsonl)")
    return "\n".join(lines)


def _stop_if_strict(strict: bool, rejections: list[Rejection]) -> None:
    if strict and rejections:
        r = rejections[0]
        raise UserError(
            f"{r.source}: record at line {r.line}: {r.detail} ({r.reason}).",
            fix="fix or remove the record, or set data.strict=false to skip bad records",
        )


def _truncate_answer(tokenizer: Any, answer: str, room: int) -> str | None:
    """The longest character prefix of `answer` that encodes to at most `room` tokens.

    Searching over characters (not cutting token ids and decoding) never splits a multi-byte
    character into byte-fallback pieces, which would decode to U+FFFD.
    """

    def fits(k: int) -> bool:
        return len(tokenizer(answer[:k].rstrip(), add_special_tokens=False)["input_ids"]) <= room

    lo, hi = 0, len(answer)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return answer[:lo].rstrip() or None


def run(cfg: PipelineConfig, run_dir: RunDir) -> dict[str, Any]:
    dc = cfg.data
    loaded = load_files(dc.files)
    model_ref = resolve_base_model(cfg)
    tokenizer = load_tokenizer(model_ref, cfg.model.trust_remote_code)
    fmt_name = cfg.model.prompt_format
    if fmt_name == "auto":
        fmt_name = prompt_format.detect(getattr(tokenizer, "chat_template", None))
    fmt = prompt_format.build(fmt_name, cfg.system_prompt())

    rejections: list[Rejection] = []
    kept: list[dict[str, Any]] = []
    seen: set[tuple[str, ...]] = set()
    normalized = truncated = 0
    name = dc.assistant_name
    for rec in loaded.records:
        _stop_if_strict(dc.strict, rejections)
        sample, problem = _validate(rec)
        if sample is not None:
            changed, problem = _clean_sample(rec, sample, dc)
            normalized += changed
        if problem:
            rejections.append(problem)
            continue
        assert sample is not None
        key = tuple(sample.texts.values())
        if key in seen:
            rejections.append(
                Rejection(rec.source, rec.line, "duplicate", "same as an earlier record", rec.data)
            )
            continue
        seen.add(key)
        row = _as_row(sample, fmt)
        pieces = fmt.record_segments(row)
        prompt = "".join(text for text, _ in pieces[:-1])
        completion = pieces[-1][0]
        prompt_ids = tokenizer(prompt)["input_ids"]
        n_tokens = len(prompt_ids) + len(tokenizer(completion, add_special_tokens=False)["input_ids"])
        if n_tokens > dc.max_length:
            room = dc.max_length - len(prompt_ids) - 8
            short = None
            if dc.overlong == "truncate" and room > 0:
                short = _truncate_answer(tokenizer, row["output"], room)
            if not short:
                detail = f"{n_tokens} tokens > data.max_length={dc.max_length}"
                rejections.append(Rejection(rec.source, rec.line, "too_long", detail, rec.data))
                continue
            row["output"] = short
            completion = fmt.completion(short)
            n_tokens = len(prompt_ids) + len(tokenizer(completion, add_special_tokens=False)["input_ids"])
            truncated += 1
        digest = hashlib.sha1("\x1f".join(key).encode()).hexdigest()[:10]
        answers = [row["output"], *(a for _, a in row.get("history", []))]
        kept.append(
            {
                "id": f"{Path(rec.source).stem}-{rec.line}-{digest}",
                **row,
                "prompt": prompt,
                "completion": completion,
                "identity": any(name.lower() in a.lower() for a in answers),
                "turns": len(sample.turns),
                "format": sample.kind,
                "n_tokens": n_tokens,
                "source": rec.source,
            }
        )
    _stop_if_strict(dc.strict, rejections)

    rejected_path = run_dir / "data" / "rejected.jsonl"
    write_jsonl(rejected_path, [r.as_row() for r in rejections])
    n_val, n_test = _split_sizes(len(kept), dc.val_size, dc.test_size)
    if len(kept) < n_val + n_test + MIN_TRAIN:
        detail = _describe_rejections(rejections) if rejections else ""
        raise UserError(
            f"only {len(kept)} usable record(s) left after cleaning ({len(rejections)} rejected, "
            f"{len(loaded.records)} read from {', '.join(dc.files)}); the splits need "
            f"{n_val} val + {n_test} test + at least {MIN_TRAIN} train." + (f"\n{detail}" if detail else ""),
            fix="add more distinct records with non-empty instruction and output, "
            "or lower data.val_size/data.test_size",
        )
    ordered = _stratified_order(kept, dc.seed)
    splits = {
        "test": ordered[:n_test],
        "val": ordered[n_test : n_test + n_val],
        "train": ordered[n_test + n_val :],
    }
    augmented = []
    if dc.identity_oversample > 1:
        extra = [r for r in splits["train"] if r["identity"]] * (dc.identity_oversample - 1)
        splits["train"] = splits["train"] + extra
        random.Random(dc.seed).shuffle(splits["train"])
        augmented.append(
            {
                "method": "identity_oversample",
                "factor": dc.identity_oversample,
                "records_added": len(extra),
                "description": f"身份类训练样本重复 {dc.identity_oversample} 次（仅训练集）",
            }
        )
    for split, rows in splits.items():
        write_jsonl(run_dir / "data" / f"{split}.jsonl", [{k: v for k, v in r.items()} for r in rows])
    prompt_format.save(fmt, run_dir / prompt_format.FILE_NAME)

    dropped: dict[str, int] = {}
    for r in rejections:
        dropped[r.reason] = dropped.get(r.reason, 0) + 1
    counts = {k: len(v) for k, v in splits.items()}
    notes = [f"{n} record(s) dropped as {reason}" for reason, n in sorted(dropped.items())]
    if truncated:
        notes.append(f"{truncated} answer(s) truncated to data.max_length={dc.max_length} tokens")
    drop_warning = _drop_warning(dropped, len(loaded.records), dc.max_length)
    warnings = []
    if drop_warning:
        warnings.append(drop_warning["message"])
        print(f"warning: {drop_warning['message']}", file=sys.stderr, flush=True)
    return {
        "dataset_name": " + ".join(Path(f).stem for f in dc.files),
        "inputs": loaded.inputs,
        "records_in": len(loaded.records),
        "records_kept": len(kept),
        "splits": counts,
        "dropped": dropped,
        "truncated": truncated,
        "augmented": augmented,
        "normalized": normalized,
        "drop_warning": drop_warning,
        "record_formats": dict(sorted(Counter(r.get("format", "alpaca") for r in kept).items())),
        "multi_turn_records": sum(r["turns"] > 1 for r in kept),
        "identity_records": {k: sum(r["identity"] for r in v) for k, v in splits.items()},
        "length_chars": {
            "prompt": _stats([len(fmt.user_text(r["instruction"], r["input"])) for r in kept]),
            "output": _stats([len(r["output"]) for r in kept]),
        },
        "length_tokens": {"total": _stats([r["n_tokens"] for r in kept])},
        "max_length": dc.max_length,
        "overlong": dc.overlong,
        "prompt_format": fmt.name,
        "files": {
            "train": "data/train.jsonl",
            "val": "data/val.jsonl",
            "test": "data/test.jsonl",
            "rejected": "data/rejected.jsonl",
        },
        "headline": f"train {counts['train']} / val {counts['val']} / test {counts['test']}; "
        f"{len(rejections)} rejected",
        "notes": notes,
        "warnings": warnings,
    }


# More than this share of the input dropped is a warning: the user trains on less than they think.
DROP_WARNING_SHARE = 0.2
_DROP_FIXES = {
    "too_long": "raise data.max_length (e.g. data.max_length=1024) or keep them shortened with "
    "data.overlong=truncate",
    "duplicate": "check that no file is listed twice in data.files and that the data has no copies",
    "placeholder": "fill or remove the {{...}} placeholders named in data/rejected.jsonl",
    "invalid_record": "fix the records listed in data/rejected.jsonl (missing or non-text fields)",
    "empty_output": "fill the empty answers listed in data/rejected.jsonl",
    "empty_instruction": "fill the empty questions listed in data/rejected.jsonl",
}


def _drop_warning(dropped: dict[str, int], records_in: int, max_length: int) -> dict[str, Any] | None:
    """When more than DROP_WARNING_SHARE of the records were dropped: the share, the main cause
    and its fix (None otherwise)."""
    total = sum(dropped.values())
    if not records_in or total / records_in <= DROP_WARNING_SHARE:
        return None
    cause = max(dropped, key=lambda k: dropped[k])
    share_pct = round(100 * total / records_in, 1)
    fix = _DROP_FIXES.get(cause, "see data/rejected.jsonl")
    detail = f" longer than data.max_length={max_length} tokens" if cause == "too_long" else f" {cause}"
    return {
        "dropped": total,
        "records_in": records_in,
        "share_pct": share_pct,
        "main_cause": cause,
        "main_cause_count": dropped[cause],
        "fix": fix,
        "message": f"{total} of {records_in} records ({share_pct}%) were dropped, {dropped[cause]} of them as"
        f"{detail}: training uses only {records_in - total}. To keep them: {fix}.",
    }


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "prepare", *sys.argv[1:]]
    sys.path.insert(0, str(ROOT))
    import run as cli

    sys.exit(cli.main())
