"""The environment builder's choices that do not need a fresh machine: which llama.cpp build a
machine gets, and that the build tools the benchmark needs were installed here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainer import bootstrap


def test_cpu_machines_get_the_cpu_build_keyed_by_cpu_features() -> None:
    tag, flags = bootstrap._llama_build("cpu")
    assert tag == bootstrap._cpu_tag() and flags == []


def test_cuda_machines_get_a_cuda_build_only_with_nvcc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootstrap, "_nvcc", lambda: "/usr/local/cuda/bin/nvcc")
    assert bootstrap._llama_build("cuda") == (bootstrap._cpu_tag() + "-cuda", ["-DGGML_CUDA=ON"])
    said: list[str] = []
    monkeypatch.setattr(bootstrap, "_nvcc", lambda: None)
    monkeypatch.setattr(bootstrap, "_say", said.append)
    assert bootstrap._llama_build("cuda") == (bootstrap._cpu_tag(), [])
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
