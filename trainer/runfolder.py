"""The run folder: atomic file writes, `<stage>.json` summaries, `config.resolved.yaml`, `env.json`.

Every artifact is written to a temporary name beside its target and renamed, so a killed process
never leaves a half-written file that a later stage could take for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainer.paths import LLAMA_CPP_BUILD_RECORD, ROOT  # stdlib-only, like this module

COMPLETED = "completed"


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; artifacts are ordinary files
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Like atomic_path for a folder: build it under a temporary name, then swap it in."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def dir_bytes(path: Path) -> int:
    """Bytes of all files under `path` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


class RunDir:
    """Paths of one run folder. Nothing but files passes between stages."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    def __fspath__(self) -> str:
        return str(self.path)

    def stage_file(self, stage: str) -> Path:
        return self.path / f"{stage}.json"

    def stage_result(self, stage: str) -> dict[str, Any] | None:
        path = self.stage_file(stage)
        if not path.exists():
            return None
        try:
            return read_json(path)
        except (json.JSONDecodeError, OSError):
            return None

    def completed(self, stage: str) -> dict[str, Any] | None:
        result = self.stage_result(stage)
        return result if result and result.get("status") == COMPLETED else None


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_units() -> list[str]:
    """The bf16 matrix/vector units of this CPU (AMX-BF16, AVX512-BF16) that torch's CPU bf16
    kernels (oneDNN) use; empty on CPUs without them, where bf16 is emulated and slower than fp32."""
    return sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def gpu_info() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "memory_bytes": props.total_memory,
        "capability": f"{props.major}.{props.minor}",
    }


def environment() -> dict[str, Any]:
    """Library versions, git commit, Python, CPU/GPU and memory: written to env.json."""
    import importlib.metadata as md

    import psutil

    versions = {}
    for name in (
        "torch",
        "transformers",
        "trl",
        "peft",
        "accelerate",
        "datasets",
        "unsloth",
        "unsloth_zoo",
        "bitsandbytes",
        "llama_cpp_python",
        "ollama",
        "weasyprint",
        "jieba",
        "rouge-chinese",
        "nltk",
    ):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {
        "created_at": now_iso(),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16_units": cpu_bf16_units(),
        "memory_bytes": psutil.virtual_memory().total,
        "gpu": gpu_info(),
        "libraries": versions,
        "llama_cpp_build": llama_cpp_build(),
    }


def llama_cpp_build() -> dict[str, Any]:
    """How this environment's llama.cpp was built (CMake flags, AMX off and why), as recorded by
    trainer/bootstrap.py in the virtual environment; says so when there is no record."""
    record = Path(sys.prefix) / LLAMA_CPP_BUILD_RECORD
    if not record.exists():
        return {
            "recorded": False,
            "reason": f"no {record.name} in {sys.prefix} (not built by trainer/bootstrap.py)",
        }
    return {"recorded": True, **json.loads(record.read_text())}
