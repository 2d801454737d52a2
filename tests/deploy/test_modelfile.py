"""The Modelfile reproduces the training prompt format exactly and reads back as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainer import prompt_format
from trainer.config import PipelineConfig
from trainer.modelfile import (
    ModelfileError,
    parse_modelfile,
    read_modelfile,
    render_go_template,
    render_modelfile,
    spec_from_text,
    write_modelfile,
)

SYSTEM = "你是小知，一个乐于助人的中文问答助手。请用简体中文准确、简洁地回答。"
CONVERSATIONS = [
    ("用一句话介绍北京。", ""),
    ("把下面的句子翻译成英文。", "今天天气很好。"),
    ("  前后有空格的问题  ", "  多行输入\n第二行  "),
    ("What is 2+2?", ""),
]


@pytest.mark.parametrize("format_name", ["llama2", "chatml"])
@pytest.mark.parametrize(("instruction", "input_text"), CONVERSATIONS)
def test_modelfile_template_renders_the_training_prompt(
    format_name: str, instruction: str, input_text: str
) -> None:
    fmt = prompt_format.build(format_name, SYSTEM)
    spec = spec_from_text(render_modelfile(fmt, "model.gguf", 2048, 0.7), folder=Path("."))
    # Ollama renders TEMPLATE with .System = SYSTEM and .Prompt = the request's prompt.
    through_ollama = render_go_template(spec.template, spec.system, fmt.user_text(instruction, input_text))
    assert through_ollama == fmt.prompt(instruction, input_text)


@pytest.mark.parametrize("format_name", ["llama2", "chatml"])
def test_modelfile_reads_back_with_every_value(format_name: str, tmp_path) -> None:
    fmt = prompt_format.build(format_name, SYSTEM)
    text = render_modelfile(fmt, "model-Q4_K_M.gguf", 4096, 0.3)
    commands = parse_modelfile(text)
    names = [n for n, _ in commands]
    assert names[:3] == ["model", "template", "system"]
    assert dict(commands[:3]) == {
        "model": "./model-Q4_K_M.gguf",
        "template": fmt.ollama_template,
        "system": SYSTEM,
    }
    assert [v for n, v in commands if n == "stop"] == list(fmt.stop)
    (tmp_path / "Modelfile").write_text(text, encoding="utf-8")
    spec = read_modelfile(tmp_path / "Modelfile")
    assert spec.gguf_path == (tmp_path / "model-Q4_K_M.gguf").resolve()
    assert spec.parameters == {"stop": list(fmt.stop), "num_ctx": 4096, "temperature": 0.3}
    assert isinstance(spec.parameters["num_ctx"], int)


def test_llama2_stops_cover_the_chat_markers() -> None:
    text = render_modelfile(prompt_format.build("llama2", SYSTEM), "m.gguf", 2048, 0.0)
    stops = [v for n, v in parse_modelfile(text) if n == "stop"]
    assert {"[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "</s>"} <= set(stops)


def test_write_modelfile_puts_it_beside_the_gguf(tmp_path) -> None:
    gguf = tmp_path / "models/gguf/model-Q4_K_M.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF")
    cfg = PipelineConfig()
    cfg.export.num_ctx = 1024
    path = write_modelfile(tmp_path, prompt_format.build("chatml", SYSTEM), gguf, cfg)
    assert path == tmp_path / "models/gguf/Modelfile"
    spec = read_modelfile(path)
    assert spec.source == "./model-Q4_K_M.gguf"
    assert spec.gguf_path == gguf.resolve()
    assert spec.parameters["num_ctx"] == 1024


def test_go_template_subset_follows_go_semantics() -> None:
    template = (
        "{{- if .System }}<sys>{{ .System }}</sys>\n{{ end }}  \n {{- .Prompt -}} \n\t [end]{{/* note */}}"
    )
    assert render_go_template(template, "S", "P") == "<sys>S</sys>\nP[end]"
    assert render_go_template(template, "", "P") == "P[end]"
    assert render_go_template("{{ if .System }}A{{ else }}B{{ end }}", "", "x") == "B"
    # "-" without a space is not a trim marker in Go; here it is just not supported.
    with pytest.raises(ModelfileError):
        render_go_template("{{-.Prompt}}", "", "x")


def test_messages_templates_are_refused() -> None:
    # With .Messages Ollama passes the system prompt as a message *and* as .System (see the
    # recorded exchanges): our templates must use .System/.Prompt only.
    recorded = "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{- range .Messages }}x{{ end }}"
    with pytest.raises(ModelfileError, match="range"):
        render_go_template(recorded, "S", "P")
    with pytest.raises(ModelfileError, match=r"\.Response"):
        render_go_template("{{ .Prompt }}{{ .Response }}", "S", "P")


@pytest.mark.parametrize(
    ("system", "problem"),
    [('他说"""你好"""', '"""'), ("全角\u3000空格", "U+3000"), ("不换行\u00a0空格", "U+00A0")],
)
def test_values_ollama_would_change_are_refused(system: str, problem: str) -> None:
    with pytest.raises(ModelfileError, match=re.escape(problem)):
        render_modelfile(prompt_format.build("chatml", system), "m.gguf", 2048, 0.0)


def test_quotes_inside_the_system_prompt_survive() -> None:
    system = '请把"问题"原样复述，然后回答 "好"'
    spec = spec_from_text(
        render_modelfile(prompt_format.build("chatml", system), "m.gguf", 2048, 0.0), folder=Path(".")
    )
    assert spec.system == system


def test_template_that_drifts_from_the_prompt_is_refused() -> None:
    fmt = prompt_format.build("chatml", SYSTEM)
    drifted = prompt_format.PromptFormat(
        **{**fmt.to_dict(), "stop": fmt.stop, "ollama_template": "{{ .Prompt }}"}
    )
    with pytest.raises(ModelfileError, match="does not reproduce"):
        render_modelfile(drifted, "m.gguf", 2048, 0.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('TEMPLATE """x"""\n', "no FROM"),
        ('FROM ./m.gguf\nSYSTEM """never closed\n', "end of file"),
        ("FROM ./m.gguf\nBOGUS x\n", "unknown command"),
    ],
)
def test_parser_rejects_what_ollama_rejects(text: str, message: str) -> None:
    with pytest.raises(ModelfileError, match=message):
        parse_modelfile(text)
