"""The run folder contract: one typed result per stage, as written to `<stage>.json` (docs/ARTIFACTS.md).

Imported by the stages (to build what they write), the report, deploy and the benchmarks (to read
it); stdlib only, so importing it never pulls in torch. Each stage result is a dataclass with
`from_dict(d)` / `to_dict()`, and `to_dict(from_dict(d)) == d` for every file a stage writes:
keys this module does not name are kept in `extra`, so an older or newer run folder round-trips too.

A value that was not measured is a `NotMeasured`, never `None` or a placeholder: `null` in the file
becomes `NotMeasured(why)` with the stage's own `*_reason` beside it, a key that is not in the
file at all becomes `NotMeasured(absent=True)` (and is left out again by `to_dict`). Wording a
reason for a reader (in Chinese) is the report's job; this module carries the stage's words only.
The vocabulary (`NotMeasured`, `measured`, `known`, the report's `shown`) is listed in base.py.

A stage builds and writes its result as `write_json(run_dir / "train.json", record)` where the
runner wraps `TrainResult(...).to_dict()`; a reader calls
`load_result(run_dir, "train", TrainResult)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.results.base import (
    ABSENT,
    NotMeasured,
    OptNum,
    OptStr,
    Reason,
    Record,
    ResultError,
    StageResult,
    known,
    measured,
    note,
    or_not_measured,
)
from trainer.results.benchmark import (
    BenchFiles,
    BenchmarkResult,
    BenchMemory,
    BenchSettings,
    EngineDetails,
    LevelSummary,
    ModelArch,
    Percentiles,
    Roofline,
    TimingAgreement,
    TimingPair,
)
from trainer.results.serving import (
    ApiCase,
    ApiTest,
    DeployResult,
    ExportResult,
    GgufVerification,
    LlamacppComparison,
    LoadedModel,
    ModelFile,
    PromptTokens,
    ReportResult,
    StopCheck,
    TemplateCheck,
)
from trainer.results.training import (
    Augmentation,
    BackendChoice,
    BackendProbe,
    Checkpoint,
    DropWarning,
    EvalExample,
    EvalMetric,
    EvalSettings,
    EvalSplitCap,
    EvaluateResult,
    Hyperparameters,
    IdentityCheck,
    IdentityProbe,
    InputFile,
    Leakage,
    LeakExample,
    LengthChars,
    LengthStats,
    LengthTokens,
    LoraSettings,
    PrepareResult,
    ProbeOverlap,
    ProbeRun,
    Qualitative,
    QualitativeMeasure,
    Splits,
    TrainFiles,
    TrainResources,
    TrainResult,
    TrainTimeBudget,
    Utilisation,
)

# ---- env.json -------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class GpuInfo(Record):
    name: OptStr = ABSENT
    count: OptNum = ABSENT
    memory_bytes: OptNum = ABSENT
    capability: OptStr = ABSENT


@dataclass(kw_only=True)
class EnvInfo(Record):
    """env.json: the machine and the library versions of the run (written by run.py, not a stage)."""

    created_at: OptStr = ABSENT
    git_commit: OptStr = ABSENT
    python: OptStr = ABSENT
    platform: OptStr = ABSENT
    cpu_model: OptStr = ABSENT
    cpu_count: OptNum = ABSENT
    cpu_bf16_units: list[str] | NotMeasured = ABSENT
    memory_bytes: OptNum = ABSENT
    gpu: GpuInfo | NotMeasured = ABSENT  # null: the run had no GPU
    libraries: dict[str, str | None] | NotMeasured = ABSENT
    llama_cpp_build: dict[str, Any] | NotMeasured = ABSENT


# ---- the stage record around every result ---------------------------------------------------------


@dataclass(kw_only=True)
class StageRecord(Record):
    """`<stage>.json`: the runner's envelope; `results` is the stage's typed result once completed."""

    stage: OptStr = ABSENT
    status: OptStr = ABSENT  # running | completed | failed | interrupted (written before the stage runs)
    config_fingerprint: OptStr = ABSENT
    started_at: OptStr = ABSENT
    finished_at: OptStr = ABSENT
    duration_s: OptNum = ABSENT
    error: OptStr = ABSENT
    traceback: OptStr = ABSENT
    results: Any = ABSENT

    @classmethod
    def read(cls, data: Any, result: type[StageResult] | None = None) -> StageRecord:
        """Decode the envelope, then `results` as `result` (the stage's type, `stages.py`); left a
        plain dict without one."""
        record = cls.from_dict(data)
        if result is not None and isinstance(record.results, dict):
            record.results = result.from_dict(record.results)
        return record


def load_result(run_dir: Path | Any, stage: str, result: type[StageResult]) -> StageRecord | None:
    """`<stage>.json` of a run folder as a typed record (`results` decoded as `result`, e.g.
    `load_result(run_dir, "train", TrainResult)`); None when the file does not exist.

    Raises OSError / json.JSONDecodeError for an unreadable file and ResultError for one whose
    shape does not match the contract.
    """
    path = Path(getattr(run_dir, "path", run_dir)) / f"{stage}.json"
    if not path.exists():
        return None
    return StageRecord.read(json.loads(path.read_text(encoding="utf-8")), result)


def load_env(run_dir: Path | Any) -> EnvInfo | None:
    """env.json as `EnvInfo`; None when the file does not exist (errors as in `load_result`)."""
    path = Path(getattr(run_dir, "path", run_dir)) / "env.json"
    if not path.exists():
        return None
    return EnvInfo.from_dict(json.loads(path.read_text(encoding="utf-8")))


__all__ = [
    "ApiCase",
    "ApiTest",
    "Augmentation",
    "BackendChoice",
    "BackendProbe",
    "BenchFiles",
    "BenchMemory",
    "BenchSettings",
    "BenchmarkResult",
    "Checkpoint",
    "DeployResult",
    "DropWarning",
    "EngineDetails",
    "EnvInfo",
    "EvalExample",
    "EvalMetric",
    "EvalSettings",
    "EvalSplitCap",
    "EvaluateResult",
    "ExportResult",
    "GgufVerification",
    "GpuInfo",
    "Hyperparameters",
    "IdentityCheck",
    "IdentityProbe",
    "InputFile",
    "LeakExample",
    "Leakage",
    "LengthChars",
    "LengthStats",
    "LengthTokens",
    "LevelSummary",
    "LlamacppComparison",
    "LoadedModel",
    "LoraSettings",
    "ModelArch",
    "ModelFile",
    "NotMeasured",
    "Percentiles",
    "PrepareResult",
    "ProbeOverlap",
    "ProbeRun",
    "PromptTokens",
    "Qualitative",
    "QualitativeMeasure",
    "Reason",
    "Record",
    "ReportResult",
    "ResultError",
    "Roofline",
    "Splits",
    "StageRecord",
    "StageResult",
    "StopCheck",
    "TemplateCheck",
    "TimingAgreement",
    "TimingPair",
    "TrainFiles",
    "TrainResources",
    "TrainResult",
    "TrainTimeBudget",
    "Utilisation",
    "known",
    "load_env",
    "load_result",
    "measured",
    "note",
    "or_not_measured",
]
