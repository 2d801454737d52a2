"""The prepared GPU check for a lent H200: wheels built here, one command there.

    python -m benchmarks.gpu_check wheels            # here: Python 3.12 wheels into .gpu-wheels/
    python -m benchmarks.gpu_check dry-run           # here: wheels + dependency check + syntax + config
    python -m benchmarks.gpu_check run --out "$OUT"  # on the GPU machine (the device tool)

The GPU machine has no network and its own Python 3.12 with torch, transformers, peft, accelerate
and most common packages (/work/.library/device/KINDS.md). What training and evaluation need on top
(trl, unsloth, unsloth_zoo, bitsandbytes, datasets, jieba, rouge-chinese, ...) travels as wheels in
`.gpu-wheels/` (git-ignored, named in the device tool's `carry`). Everything that travels must fit
in 64 MiB, so two wheels are slimmed: bitsandbytes keeps only its CUDA 13 and CPU libraries (the
machine's torch is built for CUDA 13) and unsloth drops its `studio/` web app. `dry-run` checks the
budget, that every requirement of the carried wheels is either carried or on the machine (or
listed in NOT_CARRIED with the reason), that the scripts compile, and that the check's config
validates; it then prints the device command.

`run` (about 6 minutes on one H200; each job has its own time limit) installs the wheels and runs:
1. benchmarks/gpu_train_llama2.py: Unsloth vs PEFT, 4-bit QLoRA of a random Llama-2-7B-shaped
   model (short: --steps 12), tokens/s and peak VRAM (goal: Unsloth >= 1.6x tokens/s, <= 0.8x VRAM);
2. `run.py prepare train evaluate` with configs/llama2-7b-chat.yaml, its model replaced by a random
   2-layer model of Llama-2's width (model.tiny; no hub) and its training shortened.
Results go to --out: gpu_check.json (each job's status, seconds, log tail) and the jobs' JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from packaging.utils import canonicalize_name

from trainer.bootstrap import UNSLOTH_PINS
from trainer.paths import ROOT

WHEEL_DIR = ROOT / ".gpu-wheels"
TRAVEL_LIMIT_BYTES = 64 * 2**20
PYTHON_TAGS = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux2014_x86_64", "any"]
# Versions come from requirements/lock.txt (the CPU lock), so both machines run the same code.
LOCKED = ["trl", "peft", "datasets", "dill", "multiprocess", "bitsandbytes", "tyro", "docstring-parser"]
LOCKED += ["typeguard", "msgspec", "hf-transfer", "json5", "structlog", "nest-asyncio", "jieba"]
LOCKED += ["rouge-chinese"]
UNPINNED = ["cut_cross_entropy", "torchao"]  # GPU-only dependencies of unsloth_zoo: not in the lock
# Requirements of the carried wheels that the machine lacks and that are left behind on purpose.
NOT_CARRIED = {
    "xformers": "optional at run time: Unsloth falls back to PyTorch SDPA; the wheel is ~100 MB",
    "diffusers": "imported only by Unsloth's diffusion paths, not by text LoRA training",
    "pydantic": "imported only by the unsloth CLI (unsloth_cli), not by the library",
    "triton-windows": "Windows only",
}
# Python packages on the device image (KINDS.md, read 2026-11-17); only names matter here.
DEVICE_PACKAGES = set(
    [
        "accelerate",
        "aiohttp",
        "anyio",
        "attrs",
        "certifi",
        "charset-normalizer",
        "click",
        "einops",
        "filelock",
        "fsspec",
        "hf-xet",
        "httpcore",
        "httpx",
        "huggingface-hub",
        "idna",
        "jinja2",
        "markupsafe",
        "matplotlib",
        "numpy",
        "packaging",
        "pandas",
        "peft",
        "pillow",
        "protobuf",
        "psutil",
        "pyarrow",
        "pyyaml",
        "regex",
        "requests",
        "rich",
        "safetensors",
        "sentencepiece",
        "setuptools",
        "six",
        "tokenizers",
        "torch",
        "torchvision",
        "tqdm",
        "transformers",
        "triton",
        "typer",
        "typing-extensions",
        "urllib3",
        "wheel",
        "xxhash",
    ]
)
SLIM_DROP = {
    # bitsandbytes loads libbitsandbytes_cuda<torch's CUDA>.so; the machine's torch is cu130.
    "bitsandbytes": lambda name: (
        name.endswith(".so") and not name.endswith(("_cpu.so", "_cuda130.so")) and "libbitsandbytes_" in name
    ),
    # Unsloth Studio (a web app) is not imported by the library; its vendored laya stays.
    "unsloth": lambda name: name.startswith("studio/") and not name.startswith("studio/backend/vendor/"),
}
LLAMA2_WIDTH = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 2,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
}


def locked_pins() -> list[str]:
    """`name==version` for LOCKED, read from requirements/lock.txt."""
    lock = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            lock[canonicalize_name(name)] = version.strip()
    missing = [n for n in LOCKED if canonicalize_name(n) not in lock]
    if missing:
        raise SystemExit(f"error: requirements/lock.txt has no pin for {', '.join(missing)}")
    return [f"{n}=={lock[canonicalize_name(n)]}" for n in LOCKED]


# --- wheels -------------------------------------------------------------------------------------


def slim_wheel(path: Path, drop: Callable[[str], bool]) -> list[str]:
    """Rewrite a wheel without the members `drop` selects; RECORD is rewritten to match.

    Returns the dropped member names. The file keeps its name: the package and version are the
    same, only files its import never reads are gone.
    """
    with zipfile.ZipFile(path) as src:
        members = src.infolist()
        dropped = {m.filename for m in members if drop(m.filename)}
        if not dropped:
            return []
        record = next(m.filename for m in members if m.filename.endswith(".dist-info/RECORD"))
        rows = csv.reader(io.StringIO(src.read(record).decode()))
        kept_rows = [r for r in rows if r and r[0] not in dropped]
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(kept_rows)
        tmp = path.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for m in members:
                if m.filename in dropped:
                    continue
                data = out.getvalue().encode() if m.filename == record else src.read(m)
                dst.writestr(m, data)
    tmp.replace(path)
    return sorted(dropped)


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")


def build_wheels(dest: Path = WHEEL_DIR) -> dict[str, Any]:
    """Download (or build, for sdists) the Python 3.12 wheels and slim the two big ones."""
    tmp = Path(tempfile.mkdtemp(prefix="gpu-wheels-", dir=dest.parent))
    try:
        pins = [*UNSLOTH_PINS, *locked_pins(), *UNPINNED]
        binary = [p for p in pins if not p.startswith(("jieba", "rouge-chinese"))]
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        _pip(
            "download", "--no-deps", "--only-binary=:all:", *PYTHON_TAGS, *platforms, "-d", str(tmp), *binary
        )
        # jieba ships only an sdist; it is pure Python, so a wheel built here installs anywhere.
        _pip("wheel", "--no-deps", "-w", str(tmp), *[p for p in pins if p not in binary])
        slimmed = {}
        for wheel in sorted(tmp.glob("*.whl")):
            rule = SLIM_DROP.get(canonicalize_name(wheel.name.split("-")[0]))
            if rule:
                before = wheel.stat().st_size
                dropped = slim_wheel(wheel, rule)
                slimmed[wheel.name] = {
                    "bytes_before": before,
                    "bytes_after": wheel.stat().st_size,
                    "files_dropped": len(dropped),
                }
        manifest = {
            "pins": pins,
            "slimmed": slimmed,
            "wheels": {w.name: w.stat().st_size for w in sorted(tmp.glob("*.whl"))},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.replace(dest)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- dry-run checks -----------------------------------------------------------------------------


def wheel_requirements(wheel: Path) -> list[str]:
    """Names of the requirements a wheel declares for Python 3.12 on Linux x86-64, extras off."""
    from packaging.requirements import Requirement

    env = {
        "python_version": "3.12",
        "python_full_version": "3.12.3",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "extra": "",
    }
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    names = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(env):
                names.append(canonicalize_name(req.name))
    return names


def unmet_requirements(wheel_dir: Path = WHEEL_DIR) -> dict[str, list[str]]:
    """Requirement -> wheels needing it, for requirements neither carried, on the device, nor excused."""
    wheels = sorted(wheel_dir.glob("*.whl"))
    carried = {canonicalize_name(w.name.split("-")[0]) for w in wheels}
    have = (
        carried
        | {canonicalize_name(n) for n in DEVICE_PACKAGES}
        | {canonicalize_name(n) for n in NOT_CARRIED}
    )
    unmet: dict[str, list[str]] = {}
    for wheel in wheels:
        for name in wheel_requirements(wheel):
            if name not in have:
                unmet.setdefault(name, []).append(wheel.name)
    return unmet


def travelling_bytes(wheel_dir: Path = WHEEL_DIR) -> dict[str, int]:
    """What the device tool sends: the working tree git would copy plus the carried wheels."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    tree = sum((ROOT / n.decode()).stat().st_size for n in listed if n and (ROOT / n.decode()).is_file())
    wheels = sum(p.stat().st_size for p in wheel_dir.glob("*") if p.is_file())
    return {"tree_bytes": tree, "wheel_bytes": wheels, "total_bytes": tree + wheels}


def check_config(out_dir: Path) -> Path:
    """Write configs/llama2-7b-chat.yaml with the check's changes; validate it with the toolkit."""
    cfg = yaml.safe_load((ROOT / "configs" / "llama2-7b-chat.yaml").read_text(encoding="utf-8"))
    cfg["run_name"] = "gpu-check"
    # A random model of Llama-2's width with 2 layers and a SentencePiece tokenizer trained on the
    # bundled data (trainer/models.py `tiny`): the 4-bit load, Unsloth's kernels, the llama2 prompt
    # format and generation all run as with the real model, without the hub.
    cfg["model"].update(name="tiny", name_4bit="", tiny=dict(LLAMA2_WIDTH), tiny_vocab_size=4096)
    cfg["train"].update(epochs=1, max_steps=30, warmup_steps=5, logging_steps=5, eval_steps=15, save_steps=30)
    cfg["evaluate"].update(max_new_tokens=64, max_samples=24)
    path = out_dir / "gpu-check.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    from trainer.config import load_config

    load_config(path)
    return path


def compile_scripts() -> list[str]:
    """Compile every module the device run executes (a syntax error fails here, not there)."""
    files = [
        ROOT / "run.py",
        *sorted((ROOT / "trainer").rglob("*.py")),
        *sorted((ROOT / "benchmarks").rglob("*.py")),
    ]
    for f in files:
        compile(f.read_text(encoding="utf-8"), str(f), "exec")
    return [str(f.relative_to(ROOT)) for f in files]


DEVICE_COMMAND = (
    "set -o pipefail; PYTHONUNBUFFERED=1 FT_NO_BOOTSTRAP=1 python3 -m benchmarks.gpu_check run "
    '--out "$OUT" 2>&1 | tee "$OUT/log.txt"'
)


def dry_run(rebuild: bool) -> int:
    if rebuild or not (WHEEL_DIR / "manifest.json").is_file():
        build_wheels()
    manifest = json.loads((WHEEL_DIR / "manifest.json").read_text())
    size = travelling_bytes()
    unmet = unmet_requirements()
    compiled = compile_scripts()
    with tempfile.TemporaryDirectory() as tmp:
        check_config(Path(tmp))
    problems = []
    if size["total_bytes"] > TRAVEL_LIMIT_BYTES:
        problems.append(f"{size['total_bytes'] / 2**20:.1f} MiB would travel; the device tool takes 64 MiB")
    problems += [
        f"{name} (needed by {', '.join(ws)}) is neither carried nor on the device"
        for name, ws in unmet.items()
    ]
    print(
        f"wheels: {len(manifest['wheels'])} in {WHEEL_DIR.relative_to(ROOT)}/ ({size['wheel_bytes'] / 2**20:.1f} MiB)"
    )
    for name, s in manifest["slimmed"].items():
        print(f"  slimmed {name}: {s['bytes_before'] / 2**20:.1f} -> {s['bytes_after'] / 2**20:.1f} MiB")
    print(
        f"travels: {size['total_bytes'] / 2**20:.1f} MiB of 64 (working tree {size['tree_bytes'] / 2**20:.1f} MiB)"
    )
    print(f"compiled: {len(compiled)} modules; config: configs/llama2-7b-chat.yaml + check changes validates")
    print(f"left behind on purpose: {', '.join(NOT_CARRIED)}")
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        return 1
    print(f"ready. device tool: run(command='{DEVICE_COMMAND}', carry=['.gpu-wheels'], timeout_s=600)")
    return 0


# --- run (on the GPU machine) -------------------------------------------------------------------


def _job(name: str, cmd: list[str], timeout_s: float, log_dir: Path) -> dict[str, Any]:
    """Run one job as a child; its output goes to a log; status ok / failed / timed out."""
    print(f"== {name}: {' '.join(cmd)} (limit {timeout_s:.0f} s)", flush=True)
    start = time.perf_counter()
    log = log_dir / f"{name}.log"
    with log.open("w") as fh:
        try:
            rc = subprocess.run(
                cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s
            ).returncode
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout_s:.0f} s"
    tail = log.read_text(errors="replace")[-3000:]
    print(tail[-1500:], flush=True)
    return {"job": name, "status": status, "seconds": round(time.perf_counter() - start, 1), "log_tail": tail}


def _gpu_facts() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "gpu_memory_bytes": props.total_memory,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def unsloth_vs_peft(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goal as ratios: Unsloth >= 1.6x PEFT's tokens/s at <= 0.8x its peak VRAM."""
    from trainer.backends import LOADERS

    ok = {r["backend"]: r for r in results if r.get("status") == "ok"}
    if not LOADERS.keys() <= ok.keys():
        return {
            "measured": False,
            "reason": "a backend failed: " + ", ".join(sorted(LOADERS.keys() - ok.keys())),
        }
    u, p = ok["unsloth"], ok["peft"]
    speed = u["tokens_per_s"] / p["tokens_per_s"]
    vram = u["peak_vram_reserved_bytes"] / p["peak_vram_reserved_bytes"]
    return {
        "measured": True,
        "tokens_per_s_ratio": round(speed, 3),
        "peak_vram_ratio": round(vram, 3),
        "goal_met": speed >= 1.6 and vram <= 0.8,
    }


def run_check(out: Path, llama2_steps: int) -> int:
    gpu = _gpu_facts()
    if not gpu:
        print(
            "error: no CUDA GPU here: `run` is for the device tool's machine; use `dry-run` here.",
            file=sys.stderr,
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    py = sys.executable
    wheels = sorted(str(w) for w in WHEEL_DIR.glob("*.whl"))
    jobs = [
        _job("install", [py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", *wheels], 180, logs)
    ]
    bench_json = out / "gpu_train_llama2.json"
    jobs.append(
        _job(
            "gpu_train_llama2",
            [
                py,
                "-m",
                "benchmarks.gpu_train_llama2",
                "--steps",
                str(llama2_steps),
                "--warmup-steps",
                "2",
                "--timeout",
                "150",
                "--out",
                str(bench_json),
            ],
            330,
            logs,
        )
    )
    config = check_config(logs)
    jobs.append(
        _job(
            "train_evaluate",
            [py, "run.py", "prepare", "train", "evaluate", "--config", str(config)],
            180,
            logs,
        )
    )
    for stage in ("prepare", "train", "evaluate"):
        src = ROOT / "outputs" / "gpu-check" / f"{stage}.json"
        if src.is_file():
            shutil.copy(src, out / f"{stage}.json")
    summary = {"command": "python -m benchmarks.gpu_check run", "machine": gpu, "jobs": jobs}
    if bench_json.is_file():
        summary["unsloth_vs_peft"] = unsloth_vs_peft(json.loads(bench_json.read_text())["results"])
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    for j in jobs:
        print(f"{j['job']:18} {j['status']:28} {j['seconds']:7.1f} s")
    return 0 if all(j["status"] == "ok" for j in jobs) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("wheels", help="download and slim the Python 3.12 wheels into .gpu-wheels/")
    dry = sub.add_parser("dry-run", help="wheels, dependency and size check, syntax, config; no GPU needed")
    dry.add_argument("--rebuild", action="store_true", help="download the wheels again")
    run = sub.add_parser("run", help="on the GPU machine: install the wheels and run the checks")
    run.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and the jobs' JSON")
    run.add_argument("--llama2-steps", type=int, default=12, help="steps per backend of gpu_train_llama2")
    args = p.parse_args(argv)
    if args.command == "wheels":
        manifest = build_wheels()
        print(json.dumps(manifest["wheels"], indent=2))
        return 0
    if args.command == "dry-run":
        return dry_run(args.rebuild)
    return run_check(args.out, args.llama2_steps)


if __name__ == "__main__":
    sys.exit(main())
