"""Checks shared by the tests of the stages' typed results (trainer/results): every key named, and
the written file round-trips through its type in the order the stage wrote it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from stages import by_name
from trainer import results
from trainer.runfolder import RunDir


def unnamed_keys(value: Any, path: str = "") -> list[str]:
    """Dotted paths of every key kept in `extra` (a key no field names), nested objects included."""
    found: list[str] = []
    if isinstance(value, results.Record):
        found += [f"{path}.{key}" if path else key for key in value.extra]
        for f in dataclasses.fields(value):
            if f.name != "extra":
                found += unnamed_keys(getattr(value, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += unnamed_keys(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += unnamed_keys(item, f"{path}.{key}")
    return found


def assert_every_key_named(stage: str, data: dict[str, Any]) -> results.StageResult:
    """`data` (a stage's results) decodes with no key left in `extra` and encodes back to itself,
    keys in the same order at every level; the decoded result."""
    typed = by_name(stage).result.from_dict(data)
    assert unnamed_keys(typed) == [], stage  # every key the stage writes has a field
    assert typed.to_dict() == data, stage
    # The file keeps the order the stage wrote its keys in, nested objects included.
    assert json.dumps(typed.to_dict()) == json.dumps(data), stage
    return typed


def assert_typed_round_trip(run_dir: RunDir, stage: str) -> results.StageResult:
    """`<stage>.json` in `run_dir` is completed and its results pass `assert_every_key_named`."""
    raw = json.loads((run_dir / f"{stage}.json").read_text(encoding="utf-8"))
    assert raw["status"] == "completed", (stage, raw.get("error"))
    return assert_every_key_named(stage, raw["results"])
