"""benchmarks/gpu_check.py: the parts of the prepared GPU check that run without a GPU or network."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks import gpu_check


def _wheel(tmp_path: Path, name: str, files: dict[str, str], requires: list[str] = ()) -> Path:
    """A minimal valid wheel: the files, METADATA with Requires-Dist, WHEEL and RECORD."""
    dist = f"{name}-1.0.dist-info"
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: 1.0\n{}".format(
        name, "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    members = {
        **files,
        f"{dist}/METADATA": meta,
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in members) + f"{dist}/RECORD,,\n"
    path = tmp_path / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for member, text in {**members, f"{dist}/RECORD": record}.items():
            z.writestr(member, text)
    return path


def test_slimmed_wheel_drops_files_and_record_rows_and_still_installs(tmp_path: Path) -> None:
    wheel = _wheel(
        tmp_path,
        "bitsandbytes",
        {
            "bitsandbytes/__init__.py": "VALUE = 1\n",
            "bitsandbytes/libbitsandbytes_cpu.so": "cpu",
            "bitsandbytes/libbitsandbytes_cuda130.so": "cuda13",
            "bitsandbytes/libbitsandbytes_cuda118.so": "cuda11",
            "bitsandbytes/libbitsandbytes_rocm72.so": "rocm",
        },
    )
    dropped = gpu_check.slim_wheel(wheel, gpu_check.SLIM_DROP["bitsandbytes"])
    assert sorted(dropped) == [
        "bitsandbytes/libbitsandbytes_cuda118.so",
        "bitsandbytes/libbitsandbytes_rocm72.so",
    ]
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        record = z.read("bitsandbytes-1.0.dist-info/RECORD").decode()
    assert (
        "bitsandbytes/libbitsandbytes_cuda130.so" in names and "bitsandbytes/libbitsandbytes_cpu.so" in names
    )
    assert "cuda118" not in record and "rocm72" not in record and "cuda130" in record
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    assert sorted(p.name for p in (target / "bitsandbytes").glob("*.*")) == [
        "__init__.py",
        "libbitsandbytes_cpu.so",
        "libbitsandbytes_cuda130.so",
    ]


def test_unsloth_slimming_keeps_the_library_and_the_vendored_laya() -> None:
    drop = gpu_check.SLIM_DROP["unsloth"]
    assert drop("studio/frontend/dist/assets/chat.js")
    assert not drop("studio/backend/vendor/laya/__init__.py")
    assert not drop("unsloth/models/llama.py")


def test_requirements_are_carried_on_the_device_excused_or_reported(tmp_path: Path) -> None:
    _wheel(tmp_path, "carried", {"carried/__init__.py": ""})
    _wheel(
        tmp_path,
        "needy",
        {"needy/__init__.py": ""},
        requires=[
            "carried>=1",
            "torch<3",  # on the device image
            "xformers>=0.0.27",  # left behind on purpose
            'winonly; sys_platform == "win32"',  # another platform
            'docs-only; extra == "docs"',  # an extra
            "nowhere_pkg",
        ],
    )
    assert gpu_check.unmet_requirements(tmp_path) == {"nowhere-pkg": ["needy-1.0-py3-none-any.whl"]}


def test_check_config_is_the_llama2_config_with_a_random_llama2_wide_model(tmp_path: Path) -> None:
    from trainer.config import load_config

    cfg = load_config(gpu_check.check_config(tmp_path))
    assert cfg.model.name == "tiny" and cfg.model.load_in_4bit and cfg.model.prompt_format == "llama2"
    assert cfg.model.tiny["hidden_size"] == 4096 and cfg.model.tiny["intermediate_size"] == 11008
    assert cfg.train.backend == "unsloth" and 0 < cfg.train.max_steps <= 50
    assert cfg.evaluate.max_samples > 0


def test_goal_ratios_from_the_two_backends() -> None:
    results = [
        {"backend": "unsloth", "status": "ok", "tokens_per_s": 3200.0, "peak_vram_reserved_bytes": 7e9},
        {"backend": "peft", "status": "ok", "tokens_per_s": 2000.0, "peak_vram_reserved_bytes": 10e9},
    ]
    assert gpu_check.unsloth_vs_peft(results) == {
        "measured": True,
        "tokens_per_s_ratio": 1.6,
        "peak_vram_ratio": 0.7,
        "goal_met": True,
    }
    failed = gpu_check.unsloth_vs_peft([results[1], {"backend": "unsloth", "status": "failed"}])
    assert failed == {"measured": False, "reason": "a backend failed: unsloth"}


def test_run_without_a_gpu_says_so_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: `run` would install wheels and train")
    assert gpu_check.main(["run", "--out", str(tmp_path / "out")]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_device_command_fits_the_device_tool() -> None:
    assert len(gpu_check.DEVICE_COMMAND) <= 2000
    assert "gpu_check run" in gpu_check.DEVICE_COMMAND and "$OUT" in gpu_check.DEVICE_COMMAND
