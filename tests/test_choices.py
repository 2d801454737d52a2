"""Allowed values live in one place: the `Literal[...]` type of their config field.

Validation, the command lines' `choices` and the code's dispatch tables come from there; no module
keeps its own copy of such a list (a copy is how a new value ends up accepted in one place and
refused in another).
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

from trainer import config
from trainer.backends import LOADERS
from trainer.config import PipelineConfig, TrainConfig, choices
from trainer.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "run.py", ROOT / "stages.py"] + [
    p for d in ("trainer", "benchmarks", "reporting") for p in sorted((ROOT / d).rglob("*.py"))
]


def _literal_fields() -> dict[str, tuple[str, ...]]:
    out = {}
    for section in dataclasses.fields(PipelineConfig):
        cls = typing.get_type_hints(PipelineConfig)[section.name]
        if not dataclasses.is_dataclass(cls):
            continue
        for name, hint in typing.get_type_hints(cls).items():
            if typing.get_origin(hint) is typing.Literal:
                out[f"{section.name}.{name}"] = choices(cls, name)
    return out


def _string_collections(path: Path) -> list[tuple[int, frozenset[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2:
            values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(values) == len(node.elts):
                found.append((node.lineno, frozenset(values)))
    return found


def test_no_module_keeps_its_own_copy_of_a_fields_allowed_values():
    fields = _literal_fields()
    assert len(fields) >= 10  # the fields with fixed values: backend, engine, quantization, ...
    copies = []
    for path in SOURCES:
        if path == Path(config.__file__):
            continue
        for line, values in _string_collections(path):
            for key, allowed in fields.items():
                without_auto = frozenset(allowed) - {"auto"}
                if values in (frozenset(allowed), without_auto) and len(values) >= 2:
                    copies.append(f"{path.relative_to(ROOT)}:{line} copies {key} {sorted(values)}")
    assert copies == []


def test_the_backend_table_has_every_backend_the_type_allows():
    assert set(LOADERS) == set(choices(TrainConfig, "backend")) - {"auto"}


@pytest.mark.parametrize("key", sorted(_literal_fields()))
def test_every_choice_is_accepted_and_anything_else_refused_with_the_list(key):
    section, name = key.split(".")
    for value in _literal_fields()[key]:
        cfg = config.load_config(None, [f"{key}={value}"])
        assert getattr(getattr(cfg, section), name) == value
    with pytest.raises(UserError) as excinfo:
        config.load_config(None, [f"{key}=no-such-value"])
    assert f"'{key}'" in str(excinfo.value)
    assert ", ".join(_literal_fields()[key]) in str(excinfo.value)
