"""Peak memory of a serving process while the benchmark runs: RSS with psutil, GPU memory with NVML.

Used by the llama.cpp and transformers engines of `python -m benchmarks` / `python run.py
benchmark`. A background thread samples every 100 ms: the resident set of the process and its
children, and the GPU memory the process holds (NVML per process via `pynvml` / nvidia-ml-py, else
`nvidia-smi --query-compute-apps`). Without a GPU, VRAM is None with the reason "no GPU". Reads
/proc and the GPU driver; writes nothing.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import psutil


def has_nvidia_gpu() -> bool:
    """Cheap check (no torch import): the NVIDIA driver is loaded or nvidia-smi exists."""
    return Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") is not None


def _nvml_reader() -> tuple[Any, str] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        return None

    def read(pids: set[int]) -> int:
        used = 0
        for handle in handles:
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in pids and proc.usedGpuMemory:
                    used += int(proc.usedGpuMemory)
        return used

    return read, "NVML per-process used memory"


def _smi_reader() -> tuple[Any, str] | None:
    if shutil.which("nvidia-smi") is None:
        return None

    def read(pids: set[int]) -> int:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        used = 0
        for line in out.stdout.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) in pids and parts[1].isdigit():
                used += int(parts[1]) * 1024 * 1024
        return used

    return read, "nvidia-smi per-process used memory"


class PeakSampler:
    """Samples one process tree's RSS (and GPU memory) in a thread; `result()` gives the peaks."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self.peak_vram_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._gpu = (_nvml_reader() or _smi_reader()) if has_nvidia_gpu() else None
        self._thread = threading.Thread(target=self._loop, name="bench-memory", daemon=True)

    def start(self) -> PeakSampler:
        self._thread.start()
        return self

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                rss += proc.memory_info().rss
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        self.samples += 1
        if self._gpu is not None:
            try:
                vram = self._gpu[0]({p.pid for p in procs})
            except Exception:
                vram = 0
            self.peak_vram_bytes = max(self.peak_vram_bytes, vram)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=5)

    def result(self) -> dict[str, Any]:
        self._sample()
        out: dict[str, Any] = {
            "server_peak_rss_bytes": self.peak_rss_bytes or None,
            "rss_method": f"psutil RSS of the process and its children, every {self.interval_s * 1000:.0f} ms",
        }
        if self._gpu is None:
            out["vram_bytes"] = None
            out["vram_reason"] = "no GPU"
        else:
            out["vram_bytes"] = self.peak_vram_bytes
            out["vram_method"] = f"peak {self._gpu[1]}"
        return out
