"""Fixtures of the benchmark tests: the Ollama replay server, a tiny GGUF, the embedded SmolLM2 GGUF."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.benchmarks.ollama_replay import ReplayServer


@pytest.fixture
def replay() -> Iterator[ReplayServer]:
    with ReplayServer() as server:
        yield server


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from trainer.models import embedded_gguf

    return embedded_gguf()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama-shaped GGUF header with small F32/F16 tensors (not a runnable model)."""
    import gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_context_length(256)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_eos_token_id(2)
    writer.add_token_list(["<unk>", "<s>", "</s>", "a", "b", "<|im_end|>"])
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    writer.add_tensor("token_embd.weight", np.zeros((6, 64), dtype=np.float16))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
