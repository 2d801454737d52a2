"""The Modelfile reproduces the training prompt format exactly and reads back as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from trainer import go_template, prompt_format
from trainer.config import PipelineConfig
from trainer.modelfile import (
    ModelfileError,
    parse_modelfile,
    read_modelfile,
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
    # Ollama renders TEMPLATE with the messages [system: SYSTEM, user: the request's prompt].
    prompt = fmt.user_text(instruction, input_text)
    through_ollama = go_template.generate_prompt(spec.template, spec.system, prompt)
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


THREE_TURNS = [
    ("用一句话介绍北京。\n\n北京是中国的首都。", "北京是中国的首都。"),
    ("它有多少人口？", "约两千万人。"),
    ("  再说说上海  ", "上海是中国的经济中心。"),
]


@pytest.mark.parametrize("format_name", ["llama2", "chatml"])
@pytest.mark.parametrize("system", [SYSTEM, ""])
def test_a_three_turn_chat_renders_exactly_as_training_formats_it(format_name: str, system: str) -> None:
    """/api/chat with the history: Ollama's .Messages rendering equals the training text up to the
    last answer, for a prepared multi-turn record (history + instruction) as training reads it."""
    fmt = prompt_format.build(format_name, system)
    spec = spec_from_text(render_modelfile(fmt, "m.gguf", 2048, 0.0), folder=Path("."))
    record = {
        "history": [list(turn) for turn in THREE_TURNS[:2]],
        "instruction": THREE_TURNS[2][0],
        "input": "",
        "output": THREE_TURNS[2][1],
    }
    pieces = fmt.record_segments(record)
    training = "".join(text for text, _ in pieces[:-1])
    messages = []
    for user, answer in record["history"]:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": fmt.user_text(record["instruction"])})
    assert go_template.chat_prompt(spec.template, spec.system, messages) == training


@pytest.mark.parametrize("format_name", ["llama2", "chatml"])
def test_a_record_with_its_own_system_prompt_renders_as_trained(format_name: str) -> None:
    fmt = prompt_format.build(format_name, SYSTEM)
    record = {
        "system": "你是算术助手。",
        "history": [["1加1？", "2。"]],
        "instruction": "2加2？",
        "output": "4。",
    }
    training = "".join(text for text, _ in fmt.record_segments(record)[:-1])
    messages = [
        {"role": "system", "content": "你是算术助手。"},
        {"role": "user", "content": "1加1？"},
        {"role": "assistant", "content": "2。"},
        {"role": "user", "content": "2加2？"},
    ]
    assert go_template.chat_prompt(fmt.ollama_template, fmt.system, messages) == training


def test_a_prompt_only_template_loses_the_history() -> None:
    """Why the TEMPLATE ranges over .Messages: Ollama runs a .System/.Prompt template once per turn,
    so earlier answers lose their end marker and later turns an empty system block appears."""
    old = "<|im_start|>system\n{{ .System }}<|im_end|>\n<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
    fmt = prompt_format.build("chatml", SYSTEM)
    messages = [
        {"role": "user", "content": "问一"},
        {"role": "assistant", "content": "答一"},
        {"role": "user", "content": "问二"},
    ]
    training = "".join(t for t, _ in fmt.segments([("问一", "答一"), ("问二", "")])[:-1])
    rendered = go_template.chat_prompt(old, SYSTEM, messages)
    assert rendered != training
    assert "答一<|im_start|>system\n<|im_end|>" in rendered
    assert go_template.chat_prompt(fmt.ollama_template, SYSTEM, messages) == training


def test_go_template_subset_follows_go_semantics() -> None:
    # Through the renderer Ollama's requests go through: .System and .Prompt per turn, or .Messages.
    generate, render = go_template.generate_prompt, go_template.render
    template = (
        "{{- if .System }}<sys>{{ .System }}</sys>\n{{ end }}  \n {{- .Prompt -}} \n\t [end]{{/* note */}}"
    )
    assert generate(template, "S", "P") == "<sys>S</sys>\nP[end]"
    assert generate(template, "", "P") == "P[end]"
    assert generate("{{ if .System }}A{{ else }}B{{ end }}", "", "P") == "B"
    ranged = (
        "{{ range $i, $m := .Messages }}{{ if eq $i 0 }}first:{{ else if gt $i 1 }}late:{{ end }}"
        "{{ $m.Content }};{{ end }}"
    )
    turns = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert render(ranged, turns) == "first:a;b;late:c;"
    assert render("{{ range .Messages }}x{{ else }}none{{ end }}", []) == "none"
    assert generate('{{ if and (eq .Prompt "x") (not .System) }}yes{{ end }}', "", "x") == "yes"
    # "-" without a space is not a trim marker in Go; here it is just not supported.
    with pytest.raises(go_template.TemplateError):
        generate("{{-.Prompt}}", "", "x")
    with pytest.raises(go_template.TemplateError, match="not supported"):
        generate("{{ .Tools }}", "", "x")
    with pytest.raises(go_template.TemplateError, match="pipelines"):
        generate("{{ .Prompt | len }}", "", "x")


def test_ollama_collates_and_adds_the_system_prompt() -> None:
    template = "{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}"
    chat = go_template.chat_prompt(
        template, "S", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    )
    assert chat == "[system:S][user:a\n\nb]"
    assert go_template.generate_prompt(template, "", "p") == "[user:p]"


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


@pytest.mark.parametrize("format_name", ["llama2", "chatml"])
def test_a_run_folder_with_the_old_single_turn_template_exports_the_new_one(
    format_name: str, tmp_path
) -> None:
    fmt = prompt_format.build(format_name, SYSTEM)
    data = fmt.to_dict()
    data["ollama_template"] = prompt_format._LEGACY_TEMPLATES[format_name]
    (tmp_path / prompt_format.FILE_NAME).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    loaded = prompt_format.load(tmp_path)
    assert loaded.ollama_template == fmt.ollama_template and ".Messages" in loaded.ollama_template
    # The old template asked the same single-turn prompt.
    old = go_template.generate_prompt(data["ollama_template"], SYSTEM, "问题")
    assert old == fmt.prompt("问题")
