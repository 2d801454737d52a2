"""The environment builder's choices that do not need a fresh machine: which llama.cpp build a
machine gets, and that the build tools the benchmark needs were installed here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainer import bootstrap

SAPPHIRE_RAPIDS = set(
    [
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "bmi2",
        "avx_vnni",
        "avx512f",
        "avx512cd",
        "avx512vl",
        "avx512dq",
        "avx512bw",
        "avx512vbmi",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
    ]
)
EPYC_ZEN2 = set(["sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"])


def test_x86_builds_name_each_instruction_set_the_cpu_has_and_never_amx() -> None:
    flags = bootstrap.cpu_build_flags(SAPPHIRE_RAPIDS, "x86_64")
    assert "-DGGML_NATIVE=OFF" in flags  # -march=native would switch AMX back on
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_BF16=ON", "-DGGML_AVX_VNNI=ON"} <= set(flags)
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(flags)
    assert not [f for f in flags if "AMX" in f and f.endswith("=ON")]


def test_x86_builds_switch_off_what_the_cpu_lacks() -> None:
    flags = set(bootstrap.cpu_build_flags(EPYC_ZEN2, "x86_64"))
    assert {"-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_AVX512=OFF", "-DGGML_AVX512_BF16=OFF"} <= flags
    # No AVX at all (an old or emulated x86-64 CPU): ggml's defaults would assume AVX2.
    assert {"-DGGML_AVX=OFF", "-DGGML_AVX2=OFF", "-DGGML_FMA=OFF"} <= set(
        bootstrap.cpu_build_flags(set(), "x86_64")
    )


def test_other_architectures_build_native() -> None:
    assert bootstrap.cpu_build_flags(set(), "aarch64") == ["-DGGML_NATIVE=ON"]


def test_cpu_machines_get_the_cpu_build_keyed_by_cpu_features_and_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bootstrap, "cpu_flags", lambda: SAPPHIRE_RAPIDS)
    build = bootstrap._llama_build("cpu")
    assert build.cmake_flags == bootstrap.cpu_build_flags(SAPPHIRE_RAPIDS) and build.amx == "off"
    monkeypatch.setattr(bootstrap, "cpu_flags", lambda: EPYC_ZEN2)
    assert bootstrap._llama_build("cpu").tag != build.tag


def test_cuda_machines_get_a_cuda_build_only_with_nvcc(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = bootstrap._llama_build("cpu")
    monkeypatch.setattr(bootstrap, "_nvcc", lambda: "/usr/local/cuda/bin/nvcc")
    cuda = bootstrap._llama_build("cuda")
    assert cuda.cmake_flags == [*cpu.cmake_flags, "-DGGML_CUDA=ON"] and cuda.tag != cpu.tag
    said: list[str] = []
    monkeypatch.setattr(bootstrap, "_nvcc", lambda: None)
    monkeypatch.setattr(bootstrap, "_say", said.append)
    assert bootstrap._llama_build("cuda") == cpu
    assert "no nvcc" in said[0]


def test_the_server_build_has_no_network_features_or_web_ui() -> None:
    flags = set(bootstrap.LLAMA_SERVER_CMAKE)
    assert {
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_UI=OFF",
    } <= flags


@pytest.mark.skipif(not bootstrap.in_project_venv(), reason="runs inside the project's .venv only")
def test_llama_server_and_bench_are_installed_where_the_bootstrap_built_them() -> None:
    for tool in bootstrap.LLAMA_SERVER_TOOLS:
        path = Path(bootstrap.VENV / "bin" / tool)
        if not path.exists():
            pytest.skip(f"{tool} was not built on this machine (the bootstrap printed why)")
        assert os.access(path, os.X_OK)


@pytest.mark.skipif(not bootstrap.in_project_venv(), reason="runs inside the project's .venv only")
def test_the_installed_llama_cpp_build_is_recorded_without_amx() -> None:
    import json

    record = json.loads(bootstrap.BUILD_RECORD.read_text())
    expected = bootstrap.cpu_build_flags(bootstrap.cpu_flags())  # + -DGGML_CUDA=ON on CUDA machines
    assert record["amx"] == "off" and record["cmake_flags"][: len(expected)] == expected
    assert not [f for f in record["cmake_flags"] if "AMX" in f and f.endswith("=ON")]
