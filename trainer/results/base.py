"""Decoding and encoding of the run folder contract (`trainer.results`): `Record` and `NotMeasured`.

A value that is not there, in four words (the stages, the report and deploy all use these):

- `NotMeasured(why)`: the one object for a missing value; `why` says why (a stage's words in its
  file, the report's own in Chinese). It is falsy, as is a measured 0 or "", so ask `measured`.
- `measured(v)`: is `v` a value (not a NotMeasured, not None)?
- `known(v, default)`: `v` when measured, else `default` (for code that only needs what is there).
- `shown(v, fmt)` (reporting/text.py): the report's text, `fmt(v)` or `未测量：<why>`.

Writers build results with two more: `ABSENT`, the default of an optional field (the key is not in
the file), and `or_not_measured(v, why)`, which turns a measurement's None into `NotMeasured(why)`.

Stdlib only. Reads and writes nothing: `Record.from_dict` turns one JSON object into its dataclass
(nested objects, lists and maps of objects included) and `Record.to_dict` turns it back, keeping
the keys no field names in `extra` so that `to_dict(from_dict(d)) == d`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

T = TypeVar("T", bound="Record")


class ResultError(ValueError):
    """A stage file whose shape does not match its type (the message names the key)."""


@dataclass(frozen=True)
class NotMeasured:
    """A value the stage did not measure, and why.

    `why` is the stage's own explanation (`<key>_reason` or `reason` beside a `null`), "" when it
    gave none. `absent` tells a key missing from the file from one written as `null`; `key_path` is
    the dotted key inside the result. It behaves as an empty, falsy value (iterating yields nothing)
    and reading any other attribute gives a NotMeasured for the longer path, so a reader can write
    `result.best_checkpoint.step` without first checking that the checkpoint exists. (Its own
    attribute names are ones no stage file uses, so they never hide a field of the result.)
    """

    why: str = ""
    absent: bool = False
    key_path: str = ""

    def __bool__(self) -> bool:
        return False

    def __iter__(self) -> typing.Iterator[Any]:
        return iter(())

    def __getattr__(self, name: str) -> NotMeasured:
        if name.startswith("_"):  # copy/pickle/dataclass probes must still see a plain object
            raise AttributeError(name)
        return NotMeasured("", True, f"{self.key_path}.{name}" if self.key_path else name)


def measured(value: Any) -> bool:
    """True when `value` is a measured value (not a NotMeasured and not None)."""
    return value is not None and not isinstance(value, NotMeasured)


def known(value: Any, default: Any) -> Any:
    """`value` when it was measured, else `default` (for rules that only need to know what is there)."""
    return value if measured(value) else default


V = TypeVar("V")


def or_not_measured(value: V | None, why: str = "") -> V | NotMeasured:
    """`value`, or `NotMeasured(why)` when it is None: how a writer turns a measurement that gives
    None when it could not be made (an empty loss log, a header field the file lacks) into the value
    or its reason that `measured`, `known` and the report read."""
    return NotMeasured(why) if value is None else value


# A null without its own `<key>_reason` also looks for the key without its unit suffix
# (`vram_bytes` -> `vram_reason`) and for a plain `reason`, as the stages write them.
_UNIT_SUFFIX = re.compile(r"_(bytes|s|ms|ns|pct|per_s)$")


def _reason_for(key: str, parent: dict[str, Any], reason_key: str | None) -> str:
    stem = _UNIT_SUFFIX.sub("", key)
    for candidate in (reason_key, f"{key}_reason", f"{stem}_reason", "reason"):
        value = parent.get(candidate) if candidate else None
        if isinstance(value, str) and value.strip():
            return value
    return ""


# The default of every optional field: a key the file does not have. A NotMeasured like any other
# (`measured(ABSENT)` is False); a decoded one also names its key (`key_path`) for the report.
ABSENT = NotMeasured(absent=True)


@dataclass(kw_only=True)
class Record:
    """Base of every typed object in a stage file: decoding, encoding and the unnamed keys."""

    extra: dict[str, Any] = field(default_factory=dict)
    _hints: ClassVar[dict[type, dict[str, Any]]] = {}

    @classmethod
    def from_dict(cls: type[T], data: Any, path: str = "") -> T:
        if not isinstance(data, dict):
            raise ResultError(f"{path or cls.__name__}: expected an object, got {type(data).__name__}")
        hints = _type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            key_path = f"{path}.{f.name}" if path else f.name
            kwargs[f.name] = _decode_field(f, hints[f.name], data, key_path)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs["extra"] = {k: v for k, v in data.items() if k not in names or k == "extra"}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        reasons: list[tuple[str, str | None, str]] = []
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if isinstance(value, NotMeasured):
                if value.absent:
                    continue
                if value.why:
                    reasons.append((f.name, f.metadata.get("reason_key"), value.why))
            out[f.name] = _encode(value)
        out.update(self.extra)
        # A NotMeasured built by a stage keeps its reason in the file as `<key>_reason`, unless the
        # object already says it there (as every decoded one does, so round trips are unchanged).
        for name, reason_key, why in reasons:
            if _reason_for(name, out, reason_key) != why:
                out[reason_key or f"{name}_reason"] = why
        return out


def _type_hints(cls: type) -> dict[str, Any]:
    if cls not in Record._hints:
        Record._hints[cls] = typing.get_type_hints(cls)
    return Record._hints[cls]


def _decode_field(f: dataclasses.Field[Any], hint: Any, data: dict[str, Any], path: str) -> Any:
    # A field is optional when its default is a NotMeasured; the annotation only says what is inside.
    optional = isinstance(f.default, NotMeasured)
    inner = _without_not_measured(hint)
    if f.name not in data:
        if not optional:
            raise ResultError(f"{path}: missing")
        return NotMeasured(absent=True, key_path=path)
    value = data[f.name]
    if value is None and optional:
        return NotMeasured(_reason_for(f.name, data, f.metadata.get("reason_key")), key_path=path)
    return _decode(inner, value, path)


def _without_not_measured(hint: Any) -> Any:
    """`X` for an annotation such as `X | NotMeasured` (the type a present value decodes as)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not NotMeasured]
        return args[0] if len(args) == 1 else Any
    return hint


def _decode(hint: Any, value: Any, path: str) -> Any:
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value, path)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args and _is_record(args[0]):
        if not isinstance(value, list):
            raise ResultError(f"{path}: expected a list, got {type(value).__name__}")
        return [args[0].from_dict(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict and len(args) == 2 and _is_record(args[1]):
        if not isinstance(value, dict):
            raise ResultError(f"{path}: expected an object, got {type(value).__name__}")
        return {k: args[1].from_dict(v, f"{path}.{k}") for k, v in value.items()}
    return value  # plain JSON values are kept as written; the reader checks numbers where it computes


def _is_record(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Record)


def _encode(value: Any) -> Any:
    if isinstance(value, NotMeasured):
        return None
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


OptNum = int | float | NotMeasured
OptStr = str | NotMeasured


@dataclass(kw_only=True)
class Reason(Record):
    """A reason or note as data: a code and its parameters, e.g. `{"code": "cpu_bf16_autocast",
    "params": {"units": ["amx_bf16"]}}`.

    The stage writes it beside its English text (`precision_reason`, `notes`), which stays for the
    terminal; the report words the code in Chinese (reporting/wording.py) and quotes the English
    text as written for a code it does not know. Codes are listed in docs/ARTIFACTS.md.
    """

    code: str
    params: dict[str, Any] = field(default_factory=dict)


def note(notes: list[str], codes: list[Reason], code: str, english: str, **params: Any) -> None:
    """Append one note to a stage's `notes` (English, for the terminal) and `note_codes` (for the report)."""
    notes.append(english)
    codes.append(Reason(code=code, params=params))


@dataclass(kw_only=True)
class StageResult(Record):
    """What every stage result may carry: one line for the terminal and what it skipped or fell back on.

    `headline` is a field, not a method: it is data of the run, written once by the stage that
    knows what to say (`run.py` prints it; the report's stage table shows it as written, also for a
    run folder made by an older version).
    """

    headline: OptStr = ABSENT  # English, for the terminal summary; the report shows it as written
    notes: list[str] | NotMeasured = ABSENT
    # The same notes as codes, one per note, in the same order (absent in older run folders).
    note_codes: list[Reason] | NotMeasured = ABSENT
    # Written after the stage's own keys, as the stages always wrote them (a base class's fields
    # would otherwise come first), so that `<stage>.json` files of old and new runs diff cleanly.
    trailing_keys: ClassVar[tuple[str, ...]] = ("headline", "notes", "note_codes")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in self.trailing_keys:
            if key in out:
                out[key] = out.pop(key)
        return out
