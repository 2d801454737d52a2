"""Helpers of the prepare-stage tests: sample records, writing data files, running the stage in-process
or the command line (in this process or as a real subprocess), reading the written splits."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages import by_name
from trainer.config import load_config
from trainer.pipeline import run_stage
from trainer.runfolder import RunDir

ROOT = Path(__file__).resolve().parent.parent.parent
TINY = ROOT / "configs" / "tiny.yaml"
GENERAL = ROOT / "data" / "sample" / "zh_general.jsonl"
IDENTITY = ROOT / "data" / "sample" / "zh_identity.jsonl"
BUNDLED = [GENERAL, IDENTITY]
SPLITS = ("train", "val", "test")
CONTENT = ("instruction", "input", "output", "prompt", "completion")


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


def all_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of every split (train, val, test)."""
    return [row for s in SPLITS for row in read_split(run_dir, s)]


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
