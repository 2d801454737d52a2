"""The shipped prompt set, request text building, and GGUF header facts (no server needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.prompts import SHIPPED, cache_tag, load_prompts, render
from trainer import gguf_info, prompt_format
from trainer.errors import UserError


def test_shipped_prompt_set_is_versioned_varied_and_chinese() -> None:
    prompts = load_prompts()
    assert prompts.path == str(SHIPPED)
    assert prompts.version == "zh-bench-v1"
    assert len(prompts.items) >= 40
    ids = [p["id"] for p in prompts.items]
    assert len(set(ids)) == len(ids)
    texts = [p["prompt"] for p in prompts.items]
    assert len(set(texts)) == len(texts)
    assert all(re.search(r"[\u4e00-\u9fff]", t) for t in texts)
    assert len({p["category"] for p in prompts.items}) >= 8
    assert len(prompts.sha256) == 64


def test_bad_prompt_file_reports_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text(
        '{"version": "v1", "id": "a", "prompt": "你好"}\nnot json\n{"version": "v1", "id": "b"}\n'
        '{"version": "v2", "id": "c", "prompt": "再见"}\n',
        encoding="utf-8",
    )
    with pytest.raises(UserError) as err:
        load_prompts(bad)
    text = str(err.value)
    assert "p.jsonl:2: not valid JSON" in text
    assert "p.jsonl:3: missing or empty field(s) prompt" in text
    assert "mixed versions" in text
    with pytest.raises(UserError, match="does not exist"):
        load_prompts(tmp_path / "missing.jsonl")


def test_request_text_is_the_training_format_with_a_unique_tag_first() -> None:
    fmt = prompt_format.build("chatml", "你是小知。")
    a, b = cache_tag(1), cache_tag(2)
    assert a != b and a.endswith("#1")
    text = render(fmt, "为什么天空是蓝色的？", a)
    assert (
        text
        == f"<|im_start|>system\n{a} 你是小知。<|im_end|>\n<|im_start|>user\n为什么天空是蓝色的？<|im_end|>\n<|im_start|>assistant\n"
    )
    llama2 = render(prompt_format.build("llama2", "S"), "Q", a)
    assert llama2.startswith(f"[INST] <<SYS>>\n{a} S\n<</SYS>>\n\nQ [/INST]")
    assert render(None, "Q", a) == f"{a} Q"


def test_gguf_header_facts(tiny_gguf: Path) -> None:
    info = gguf_info.read_gguf(tiny_gguf)
    assert info.architecture == "llama"
    assert info.file_type == 1 and info.quantization == "F16"
    assert info.tensor_count == 2
    assert info.tensor_bytes == 6 * 64 * 2 + 64 * 64 * 4
    assert info.params == 6 * 64 + 64 * 64
    assert (info.n_layer, info.n_head_kv, info.head_dim) == (2, 2, 16)
    assert info.kv_bytes_per_position(2) == 2 * 2 * 2 * 16 * 2
    assert info.eog_token_ids == [2, 5]  # eos id and <|im_end|> by text
    assert "<|im_start|>" in (info.chat_template or "")
    assert prompt_format.detect(info.chat_template) == "chatml"


def test_file_type_names() -> None:
    assert gguf_info.file_type_name(3) == "Q4_1"
    assert gguf_info.file_type_name(15) == "Q4_K_M"
    assert gguf_info.file_type_name(0) == "F32"
    assert gguf_info.file_type_name(None) == "unknown"
    assert gguf_info.file_type_name(999) == "file_type 999"


def test_missing_or_non_gguf_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        gguf_info.read_gguf(tmp_path / "nope.gguf")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(UserError, match="is not a GGUF file"):
        gguf_info.read_gguf(fake)
