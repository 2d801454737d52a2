"""The run folder contract (trainer/results): every stage file round-trips through its type.

Covers the fake run folders of the tests (tests/fake_run.py, one per shape the report handles), the real stage files of the tiny run (every stage: every key it writes has a field)
and the runner's check of what a stage returns.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stages import by_name, reported
from tests import fake_run
from tests.result_checks import assert_typed_round_trip
from trainer import pipeline, results
from trainer.config import load_config
from trainer.pipeline import run_stage
from trainer.runfolder import RunDir

ROOT = Path(__file__).resolve().parent.parent


def _stage_files(run: Path) -> list[Path]:
    return [
        run / f"{stage}.json" for stage in (s.name for s in reported()) if (run / f"{stage}.json").exists()
    ]


@pytest.mark.parametrize("name", sorted(fake_run.RUNS))
def test_every_fixture_stage_file_round_trips(tmp_path: Path, name: str) -> None:
    run = fake_run.build(name, tmp_path / "run")
    for path in _stage_files(run):
        raw = json.loads(path.read_text(encoding="utf-8"))
        record = results.load_result(run, path.stem, by_name(path.stem).result)
        assert record is not None
        assert record.to_dict() == raw, path.name
        if record.status == "completed":
            assert isinstance(record.results, by_name(path.stem).result)
    env = results.load_env(run)
    assert env is not None
    assert env.to_dict() == json.loads((run / "env.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("make_run", [fake_run.complete_run, fake_run.gpu_less_run])
def test_every_fixture_result_dict_round_trips(make_run: Any) -> None:
    run = make_run()
    for stage in (s.name for s in reported()):
        data = run.result(stage).to_dict()
        assert by_name(stage).result.from_dict(data).to_dict() == data, stage


def test_a_misspelt_field_in_a_fake_run_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="global_stepp"):
        results.TrainResult(global_stepp=3)  # type: ignore[call-arg]
    run = fake_run.complete_run()
    run.train.resources.peak_rss_byte = 1  # an assignment adds the attribute; writing refuses it
    with pytest.raises(TypeError, match="TrainResources has no field peak_rss_byte"):
        run.write(tmp_path / "run")
    written = fake_run.complete_run().write(tmp_path / "edited")
    with pytest.raises(TypeError, match="DeployResult has no field stauts"):
        fake_run.edit(written, "deploy", lambda deploy: setattr(deploy, "stauts", "failed"))


def test_a_real_prepare_json_round_trips(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["data.identity_oversample=3"])
    run_stage(by_name("prepare"), cfg, RunDir(tmp_path))
    raw = json.loads((tmp_path / "prepare.json").read_text(encoding="utf-8"))
    record = results.load_result(tmp_path, "prepare", results.PrepareResult)
    assert record is not None and record.to_dict() == raw
    prepared = record.results
    assert isinstance(prepared, results.PrepareResult)
    assert prepared.splits.train == raw["results"]["splits"]["train"]
    assert prepared.extra == {}  # every key prepare writes has a field
    # The augmentation is a method and its numbers; the report words it (reporting/labels.py).
    assert [set(a) for a in raw["results"]["augmented"]] == [{"method", "factor", "records_added"}]
    assert not results.measured(prepared.augmented[0].description)


def test_a_stage_builds_its_result_from_the_type() -> None:
    built = results.TrainResult(
        backend="peft",
        best_checkpoint=results.NotMeasured("no evaluation ran"),
        lora=results.LoraSettings(r=8, alpha=16, dropout=0.05, target_modules=["q_proj"]),
    )
    data = built.to_dict()
    assert data == {
        "backend": "peft",
        "best_checkpoint": None,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj"]},
        "best_checkpoint_reason": "no evaluation ran",  # the reason is written beside the null
    }
    read_back = results.TrainResult.from_dict(data)
    assert read_back.best_checkpoint.why == "no evaluation ran"
    assert read_back.to_dict() == data


def test_null_carries_the_reason_written_beside_it() -> None:
    gpu_less = fake_run.gpu_less_run()
    train = results.TrainResult.from_dict(gpu_less.train.to_dict())
    reserved = train.resources.peak_gpu_reserved_bytes
    assert isinstance(reserved, results.NotMeasured)
    assert reserved.why == "no CUDA GPU on this machine"  # resources.gpu_reason
    assert not reserved.absent
    memory = results.BenchmarkResult.from_dict(gpu_less.benchmark.to_dict()).memory
    assert memory.vram_bytes == results.NotMeasured("no GPU", key_path="memory.vram_bytes")


def test_an_absent_key_is_not_measured_and_stays_absent() -> None:
    data = {"backend": "peft"}
    train = results.TrainResult.from_dict(data)
    assert train.best_checkpoint == results.NotMeasured(absent=True, key_path="best_checkpoint")
    # Reading through a missing object gives the longer path, not an AttributeError.
    assert train.best_checkpoint.step == results.NotMeasured(absent=True, key_path="best_checkpoint.step")
    assert list(train.checkpoints) == []
    assert not results.measured(train.global_step)
    assert train.to_dict() == data


def test_measured_and_known_tell_a_value_from_a_reason() -> None:
    # 0, "" and False are values; only a NotMeasured (falsy too) or None is not.
    for value in (0, 0.0, "", False, [], "peft"):
        assert results.measured(value)
        assert results.known(value, "default") == value
    for missing in (results.NotMeasured("no GPU"), results.ABSENT, None):
        assert not results.measured(missing)
        assert results.known(missing, "default") == "default"
    train = results.TrainResult.from_dict({"backend": "peft"})
    assert results.known(train.backend, None) == "peft"
    assert results.known(train.best_checkpoint.step, -1) == -1  # through a missing object
    assert results.or_not_measured(None, "empty log") == results.NotMeasured("empty log")
    assert results.or_not_measured(0, "empty log") == 0


def test_keys_without_a_field_are_kept() -> None:
    data = {"backend": "peft", "future_key": {"a": 1}, "resources": {"wall_time_s": 1.5, "new": 2}}
    train = results.TrainResult.from_dict(data)
    assert train.extra == {"future_key": {"a": 1}}
    assert train.resources.extra == {"new": 2}
    assert train.to_dict() == data


def test_a_wrong_shape_names_the_key() -> None:
    with pytest.raises(results.ResultError, match=r"checkpoints\[1\]: expected an object"):
        results.TrainResult.from_dict({"checkpoints": [{"step": 1}, 5]})
    with pytest.raises(results.ResultError, match=r"api_test.cases: expected a list"):
        results.DeployResult.from_dict({"api_test": {"cases": "none"}})


def test_a_missing_stage_file_is_none(tmp_path: Path) -> None:
    assert results.load_result(tmp_path, "train", results.TrainResult) is None
    assert results.load_env(tmp_path) is None


def test_the_contract_imports_nothing_heavy() -> None:
    code = "import sys, trainer.results; print(sorted({'torch', 'yaml', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_reason_goes_under_the_key_the_type_names() -> None:
    resources = results.TrainResources(
        peak_gpu_reserved_bytes=results.NotMeasured("no CUDA GPU"), gpu_name=""
    )
    assert resources.to_dict() == {
        "peak_gpu_reserved_bytes": None,
        "gpu_name": "",
        "gpu_reason": "no CUDA GPU",
    }
    # Said once: a second field with the same reason does not repeat it.
    both = results.TrainResources(
        peak_gpu_reserved_bytes=results.NotMeasured("no CUDA GPU"),
        peak_gpu_allocated_bytes=results.NotMeasured("no CUDA GPU"),
    )
    assert both.to_dict()["gpu_reason"] == "no CUDA GPU"
    assert results.TrainResources.from_dict(both.to_dict()).to_dict() == both.to_dict()


def test_a_real_benchmark_result_round_trips() -> None:
    """benchmarks/results/serving-llamacpp-native.json: the results of a real llama.cpp benchmark run."""
    raw = json.loads((ROOT / "benchmarks/results/serving-llamacpp-native.json").read_text(encoding="utf-8"))
    bench = results.BenchmarkResult.from_dict(raw)
    assert bench.to_dict() == raw
    assert bench.summary and all(isinstance(row, results.LevelSummary) for row in bench.summary)
    assert isinstance(bench.timing_agreement, results.TimingAgreement)
    assert isinstance(bench.roofline, results.Roofline)
    env = results.EnvInfo.from_dict(raw["environment"])
    assert env.to_dict() == raw["environment"]
    assert not results.measured(env.gpu)


# ---- the stages' real output ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated_run(tiny_trained: Any) -> RunDir:
    cfg, run_dir = tiny_trained
    run_stage(by_name("evaluate"), cfg, run_dir)
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["prepare", "train", "evaluate"])
def test_a_real_stage_result_round_trips_with_every_key_named(evaluated_run: RunDir, stage: str) -> None:
    assert_typed_round_trip(evaluated_run, stage)


@pytest.fixture(scope="module")
def exported_run(tiny_trained: Any) -> RunDir:
    cfg, run_dir = tiny_trained
    run_stage(by_name("export"), cfg, run_dir)
    return run_dir


@pytest.mark.slow
def test_a_real_export_result_round_trips_with_every_key_named(exported_run: RunDir) -> None:
    assert_typed_round_trip(exported_run, "export")


@pytest.fixture(scope="module")
def served_run(exported_run: RunDir) -> RunDir:
    """The tiny run after deploy (not deployed: no Ollama answers on port 9), benchmark (llama.cpp on
    the exported GGUF) and report."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["deploy.host=http://127.0.0.1:9"])
    for stage in ("deploy", "benchmark", "report"):
        run_stage(by_name(stage), cfg, exported_run)
    return exported_run


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["deploy", "benchmark", "report"])
def test_a_real_serving_result_round_trips_with_every_key_named(served_run: RunDir, stage: str) -> None:
    # (A deployed deploy.json: tests/deploy/test_deploy_contract.py, against the recorded Ollama server.)
    typed = assert_typed_round_trip(served_run, stage)
    if stage == "benchmark":
        assert isinstance(typed, results.BenchmarkResult)
        assert typed.engine == "llamacpp" and typed.engine_details.server in ("native", "python")
        assert all(isinstance(row, results.LevelSummary) for row in typed.summary)
        assert results.measured(typed.duration_s) and typed.sanity["ok"]


# ---- what the runner accepts from a stage ---------------------------------------------------------


def _stage_returning(returned: Any) -> pipeline.Stage:
    """The train stage as registered, with an entry point that returns `returned`."""
    return dataclasses.replace(by_name("train"), run=lambda cfg, run_dir: returned)


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ({"checkpoints": [{"step": 1}, 5]}, r"TrainResult: checkpoints\[1\]: expected an object"),
        (results.TrainResult(checkpoints=5), r"TrainResult: checkpoints: expected a list"),  # type: ignore[arg-type]
        (results.PrepareResult(records_in=3), r"returned a PrepareResult, expected a TrainResult"),
        (None, r"returned a NoneType, expected a TrainResult"),
    ],
)
def test_a_wrongly_shaped_result_fails_the_stage_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, returned: Any, message: str
) -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [])
    with pytest.raises(results.ResultError, match=message):
        run_stage(_stage_returning(returned), cfg, RunDir(tmp_path))
    record = json.loads((tmp_path / "train.json").read_text(encoding="utf-8"))
    assert record["status"] == "failed" and "results" not in record
    assert re.search(message, record["error"])


def test_the_runner_writes_a_typed_result_as_its_dict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [])
    built = results.TrainResult(global_step=3, best_checkpoint=results.NotMeasured("no evaluation ran"))
    outcome = run_stage(_stage_returning(built), cfg, RunDir(tmp_path))
    written = json.loads((tmp_path / "train.json").read_text(encoding="utf-8"))["results"]
    assert written == outcome.results == built.to_dict()
    assert written == {
        "global_step": 3,
        "best_checkpoint": None,
        "best_checkpoint_reason": "no evaluation ran",
    }
