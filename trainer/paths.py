"""Where the project and what its installer puts in place live, in one neutral place (stdlib only).

Shared by the installer (`python3 -m trainer.bootstrap`, run by `python3 run.py` on first use),
which writes these paths, and by the stages that use what it installed (`python run.py export`
runs llama.cpp's converter from `LLAMA_CPP_CONVERTER`), so a stage never imports the installer.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# The llama-cpp-python source distribution, unpacked: its wheel does not install llama.cpp's
# GGUF converter (convert_hf_to_gguf.py with its own gguf-py), which export needs.
LLAMA_CPP_SRC = VENV / "src" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
LLAMA_CPP_CONVERTER = LLAMA_CPP_SRC / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
# How llama.cpp was built (CMake flags), recorded in the virtual environment's prefix.
LLAMA_CPP_BUILD_RECORD = "llama-cpp-build.json"
