"""The llama.cpp this environment built runs quantized models on this machine's CPU.

On an Intel Xeon with AMX (Sapphire Rapids class, KVM guest), a llama.cpp built with
-march=native puts Q4_0/Q4_1/Q8_0/K-quant weights into ggml's AMX buffer, and the first decode
dies with SIGSEGV in ggml_backend_amx_mul_mat: export's check, deploy's comparison and the
benchmark's llama-server all crashed. These tests load real quantized files (the embedded
SmolLM2-135M Q4_1 and a Q4_K_M re-quantized from it) through each way the pipeline runs
llama.cpp; every run is a child process, so a crash is a failed test, not a dead test session.
They fail on the AMX build and pass on the build trainer/bootstrap.py makes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from trainer import gguf_generate

CHATML_PROMPT = "<|im_start|>user\n用一句话介绍北京。<|im_end|>\n<|im_start|>assistant\n"
STOP = ["<|im_end|>", "<|im_start|>"]


@pytest.fixture(scope="module")
def q4_1_gguf() -> Path:
    from trainer.models import embedded_gguf

    return embedded_gguf()


@pytest.fixture(scope="module")
def q4_k_m_gguf(q4_1_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Q4_K_M re-quantized from the shipped Q4_1 file, by the same libllama call export uses."""
    import llama_cpp

    out = tmp_path_factory.mktemp("gguf") / "smollm2-Q4_K_M.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    assert llama_cpp.llama_model_quantize(str(q4_1_gguf).encode(), str(out).encode(), params) == 0
    return out


@pytest.mark.parametrize("which", ["q4_1_gguf", "q4_k_m_gguf"])
def test_llama_cpp_python_generates_from_a_quantized_file(which: str, request: pytest.FixtureRequest) -> None:
    gguf = request.getfixturevalue(which)
    out = gguf_generate.generate(gguf, CHATML_PROMPT, max_tokens=8, stop=STOP, n_ctx=256)
    assert out["tokens"] >= 1 and out["text"].strip()


def test_a_crash_in_the_child_is_a_clear_error_not_a_dead_process(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(gguf_generate.GGUFRunError, match=r"could not load or run broken\.gguf \(.*exit"):
        gguf_generate.generate(broken, "x", max_tokens=1, stop=[], n_ctx=64)
    assert gguf_generate.describe_exit(-11) == "killed by SIGSEGV (exit -11)"
    assert gguf_generate.describe_exit(2) == "exit 2"


def _tool(name: str) -> str:
    from trainer import bootstrap

    path = bootstrap.VENV / "bin" / name
    if not path.exists():
        pytest.skip(f"{name} was not built on this machine (the bootstrap printed why)")
    return str(path)


@pytest.mark.parametrize("which", ["q4_1_gguf", "q4_k_m_gguf"])
def test_llama_bench_runs_a_quantized_file(which: str, request: pytest.FixtureRequest) -> None:
    gguf = request.getfixturevalue(which)
    cmd = [_tool("llama-bench"), "-m", str(gguf), "-p", "16", "-n", "8", "-r", "1", "-t", "2", "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{gguf_generate.describe_exit(proc.returncode)}: {proc.stderr[-1500:]}"
    results = json.loads(proc.stdout)
    assert {r["n_gen"] for r in results} >= {8} and all(r["avg_ts"] > 0 for r in results)


def test_llama_server_answers_from_a_quantized_file(q4_k_m_gguf: Path) -> None:
    from benchmarks.engines.llamacpp import free_port

    port = free_port()
    cmd = [_tool("llama-server"), "-m", str(q4_k_m_gguf), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [*cmd, "-c", "512", "-t", "2", "--no-webui"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        import httpx

        body = {"prompt": CHATML_PROMPT, "n_predict": 8, "temperature": 0, "stop": STOP}
        deadline_s, answer = 120.0, None
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            import time

            t0 = time.monotonic()
            while time.monotonic() - t0 < deadline_s and server.poll() is None:
                try:
                    if client.get("/health").status_code == 200:
                        answer = client.post("/completion", json=body).json()
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
        assert server.poll() is None, (
            f"llama-server died ({gguf_generate.describe_exit(server.returncode)}): "
            f"{(server.stderr.read() if server.stderr else '')[-1500:]}"
        )
        assert answer is not None and answer["tokens_predicted"] >= 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def test_the_build_that_ran_is_recorded_in_env_json() -> None:
    from trainer.runfolder import environment

    build = environment()["llama_cpp_build"]
    if not build["recorded"]:
        pytest.skip(build["reason"])
    assert build["amx"] == "off" and build["cmake_flags"]
