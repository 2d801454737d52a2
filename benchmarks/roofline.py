"""Measure this machine's memory bandwidth and matmul peak for the roofline decode limit.

    python -m benchmarks.roofline --threads 2          # prints JSON

Bandwidth, two built-in tests on a large array (256 MiB by default, far larger than any CPU cache),
best of a few:
- read (the one the roofline uses): a bitwise-or reduction over the array, split over the
  benchmark's thread count. Decoding reads the weights and writes almost nothing, so this is the
  bandwidth a decoder can get; bytes moved = size.
- copy (STREAM's Copy, for reference): one `numpy.copyto`; read and write both count, bytes moved
  = 2 x size. A single core's copy figure can exceed what it can read, because stores stream
  beside the loads; it is not a bound for a read-only workload.
Peak compute: float32 matrix multiply (n x n, 2n^3 FLOPs), best of a few. On the CPU all run in a
child process whose BLAS thread count is pinned to the benchmark's thread count (BLAS reads it only
at import). With `--device cuda` the copy and matmul run on the GPU with torch (fp16 matmul).
Reads and writes nothing; `python -m benchmarks` calls `measure()`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from trainer.runfolder import ROOT


def best_of(fn: Any, repeats: int) -> float:
    """The fastest of `repeats` calls of fn, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _measure_cpu(copy_mib: int, matmul_n: int, repeats: int, threads: int = 1) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    n_bytes = copy_mib * 1024 * 1024
    src = np.ones(n_bytes // 8, dtype=np.uint64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch both arrays so page faults are not timed
    copy_s = best_of(lambda: np.copyto(dst, src), repeats)
    # numpy releases the GIL inside the reduction loop, so threads read their slices in parallel.
    parts = np.array_split(src, max(1, threads))
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:

        def read_all() -> None:
            list(pool.map(np.bitwise_or.reduce, parts))

        read_all()
        read_s = best_of(read_all, repeats)
    a = np.random.default_rng(0).standard_normal((matmul_n, matmul_n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((matmul_n, matmul_n), dtype=np.float32)
    a @ b  # warm-up: BLAS thread start
    mm_s = best_of(lambda: a @ b, repeats)
    return {
        "device": "cpu",
        "bandwidth_bytes_per_s": src.nbytes / read_s,
        "bandwidth_method": f"numpy read (bitwise-or reduction) of {copy_mib} MiB on {len(parts)} "
        f"thread(s), best of {repeats}",
        "copy_bandwidth_bytes_per_s": 2 * src.nbytes / copy_s,
        "copy_bandwidth_method": f"numpy copy of {copy_mib} MiB on 1 thread (read + write), best of {repeats}",
        "peak_flops_per_s": 2 * matmul_n**3 / mm_s,
        "peak_flops_method": f"numpy float32 matmul {matmul_n}x{matmul_n}, best of {repeats}",
    }


def _measure_cuda(copy_mib: int, matmul_n: int, repeats: int) -> dict[str, Any]:
    import torch

    def timed(fn: Any) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    n_bytes = copy_mib * 1024 * 1024 * 4  # GPUs have larger caches: use 4x the CPU size
    src = torch.ones(n_bytes // 2, dtype=torch.float16, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy_s = min(timed(lambda: dst.copy_(src)) for _ in range(repeats))
    n = max(matmul_n, 4096)
    a = torch.randn(n, n, dtype=torch.float16, device="cuda")
    b = torch.randn(n, n, dtype=torch.float16, device="cuda")
    a @ b
    mm_s = min(timed(lambda: a @ b) for _ in range(repeats))
    return {
        "device": "cuda",
        "bandwidth_bytes_per_s": 2 * src.numel() * 2 / copy_s,
        "bandwidth_method": f"torch device copy of {n_bytes // 2**20} MiB (read + write), best of {repeats}",
        "peak_flops_per_s": 2 * n**3 / mm_s,
        "peak_flops_method": f"torch float16 matmul {n}x{n}, best of {repeats}",
    }


def measure(
    threads: int, device: str = "cpu", copy_mib: int = 256, matmul_n: int = 1024, repeats: int = 5
) -> dict[str, Any]:
    """Bandwidth and matmul peak; on failure the values are None with a `reason`."""
    if device == "cuda":
        try:
            return _measure_cuda(copy_mib, matmul_n, repeats)
        except Exception as exc:  # a GPU test must never sink the benchmark
            return {
                "device": "cuda",
                "bandwidth_bytes_per_s": None,
                "peak_flops_per_s": None,
                "reason": f"GPU measurement failed: {exc}",
            }
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.roofline",
        "--threads",
        str(threads),
        "--copy-mib",
        str(copy_mib),
        "--matmul-n",
        str(matmul_n),
        "--repeats",
        str(repeats),
        "--here",
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return _not_measured("the bandwidth/matmul test took over 120 s")
    if out.returncode != 0:
        return _not_measured(f"the bandwidth/matmul test failed: {out.stderr.strip()[-300:]}")
    result = json.loads(out.stdout)
    result["threads"] = threads
    return result


def _not_measured(reason: str) -> dict[str, Any]:
    return {"device": "cpu", "bandwidth_bytes_per_s": None, "peak_flops_per_s": None, "reason": reason}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.roofline", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="threads of the read and matmul tests")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to measure")
    parser.add_argument("--copy-mib", type=int, default=256, help="size of the copied array in MiB")
    parser.add_argument("--matmul-n", type=int, default=1024, help="matrix size of the matmul test")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions; the best one counts")
    parser.add_argument("--here", action="store_true", help=argparse.SUPPRESS)  # child: measure in-process
    args = parser.parse_args(argv)
    if args.here and args.device == "cpu":
        result = _measure_cpu(args.copy_mib, args.matmul_n, args.repeats, args.threads)
    else:
        result = measure(args.threads, args.device, args.copy_mib, args.matmul_n, args.repeats)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
