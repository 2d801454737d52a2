"""Fixtures for the deploy tests: replay servers routed per test, a refused port, and a minimal run folder."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_run import write_stage
from tests.ollama_replay import ReplayServer, refused_url
from trainer import prompt_format
from trainer.config import PipelineConfig
from trainer.modelfile import write_modelfile
from trainer.results import ExportResult, ModelFile
from trainer.runfolder import RunDir, write_jsonl

# The system prompt of the recorded exchanges, so the replayed answers belong to these prompts.
RECORDED_SYSTEM = "你是一个乐于助人的中文助手。"
# The system prompt and test question of ../shared/ollama-api/determinism.json (the default run's
# model: xiaozhi-smollm2, ChatML), whose answers carry the prompt token ids in `context`.
DETERMINISM_SYSTEM = "你是小知，一个中文问答助手。"
DETERMINISM_RECORD = {
    "id": "test-news",
    "instruction": "给下面这则新闻标题归类，类别有：体育、财经、科技、娱乐、教育、健康。",
    "input": "中国女排3比1逆转对手，晋级世界联赛总决赛",
    "output": "体育",
}
# The recorded /api/generate prompts: the first is Chinese, the second English.
TEST_RECORDS = [
    {"id": "test-0001", "instruction": "请用一句话介绍北京。", "input": "", "output": "北京是中国的首都。"},
    {"id": "test-0002", "instruction": "What is 2+2?", "input": "", "output": "4"},
]


@pytest.fixture
def start_replay_server() -> Iterator[Callable[..., ReplayServer]]:
    """A function that starts Ollama replay servers (tests/ollama_replay.py) with the routes asked for
    (request -> recorded exchange); all are shut down after the test."""
    servers: list[ReplayServer] = []

    def start(routes: dict[str, str | list[str]] | None = None, **options: Any) -> ReplayServer:
        server = ReplayServer(routes, **options).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def refused_host() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    return refused_url()


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


def make_run_folder(
    root: Path,
    gguf: Path,
    host: str,
    format_name: str = "chatml",
    *,
    system: str = RECORDED_SYSTEM,
    records: list[dict[str, Any]] | None = None,
    tokenizer_dir: Path | None = None,
) -> tuple[PipelineConfig, RunDir]:
    """A run folder as export leaves it: prompt_format.json, data/test.jsonl, the GGUF, Modelfile,
    export.json; with `tokenizer_dir`, models/finetuned/ holds that tokenizer (the template proof)."""
    records = TEST_RECORDS if records is None else records
    cfg = PipelineConfig()
    cfg.deploy.host = host
    cfg.deploy.model_name = "demo-finetuned"
    cfg.deploy.test_prompts = len(records)
    cfg.deploy.num_predict = 48  # as in the recorded generate_nostream request
    cfg.deploy.timeout_s = 60.0
    run_dir = RunDir(root)
    fmt = prompt_format.build(format_name, system)
    prompt_format.save(fmt, run_dir / prompt_format.FILE_NAME)
    rows = [
        {
            **r,
            "prompt": fmt.prompt(r["instruction"], r["input"]),
            "completion": fmt.completion(r["output"]),
            "identity": False,
        }
        for r in records
    ]
    write_jsonl(run_dir / "data/test.jsonl", rows)
    gguf_link = run_dir / "models/gguf" / gguf.name
    gguf_link.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(gguf, gguf_link)  # 98 MB: link, do not copy
    except OSError:
        gguf_link.write_bytes(gguf.read_bytes())
    modelfile = write_modelfile(run_dir, fmt, gguf_link, cfg)
    export = ExportResult(
        gguf=ModelFile(path=str(gguf_link.relative_to(run_dir.path)), size_bytes=gguf.stat().st_size),
        modelfile=str(modelfile.relative_to(run_dir.path)),
    )
    if tokenizer_dir is not None:
        merged = run_dir / "models/finetuned"
        merged.mkdir(parents=True)
        for path in tokenizer_dir.iterdir():
            if path.is_file() and path.suffix != ".safetensors":  # the tokenizer, not the weights
                shutil.copy(path, merged / path.name)
        export.merged = ModelFile(path="models/finetuned")
    write_stage(run_dir.path, "export", export)
    return cfg, run_dir


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
