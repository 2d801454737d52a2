"""The chat/prompt format, defined once and reused by training, evaluation, Ollama and benchmarks.

`prepare` resolves the format for the model, saves it as `prompt_format.json` in the run folder,
and every later stage loads that file (`load(run_dir)`), so the text a model was trained on is
exactly the text it is asked with, in-process, in llama.cpp and in Ollama (the Modelfile TEMPLATE
is `ollama_template`, rendered by Ollama's Go template engine).

No BOS token in the text: the tokenizer (or llama.cpp/Ollama for GGUF) adds it where the model
wants one. The answer ends with the end-of-turn marker so the model learns to stop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer.runfolder import read_json, write_json


@dataclass(frozen=True)
class PromptFormat:
    name: str
    system: str
    # Python format strings with {system} and {user}; the completion with {answer}.
    prompt_template: str
    completion_template: str
    # Ollama Modelfile TEMPLATE (Go template over .Messages) producing the same text, history included.
    ollama_template: str
    # Strings that end a turn: passed as Ollama `stop` parameters and llama.cpp stop words.
    stop: tuple[str, ...]
    # A later user turn of a multi-turn conversation (after an answer), with {user}.
    turn_template: str = ""

    def user_text(self, instruction: str, input_text: str = "") -> str:
        instruction = instruction.strip()
        input_text = (input_text or "").strip()
        return f"{instruction}\n\n{input_text}" if input_text else instruction

    def prompt(self, instruction: str, input_text: str = "") -> str:
        return self.prompt_template.format(system=self.system, user=self.user_text(instruction, input_text))

    def completion(self, answer: str) -> str:
        return self.completion_template.format(answer=answer)

    def segments(self, turns: list[tuple[str, str]], system: str | None = None) -> list[tuple[str, bool]]:
        """A conversation of (user, answer) turns as text pieces, each marked True when it is an
        answer (trained on) and False when it is context. Joined, the pieces before the last answer
        are the prompt the model is asked with for that answer."""
        pieces: list[tuple[str, bool]] = []
        for i, (user, answer) in enumerate(turns):
            if i == 0:
                text = self.prompt_template.format(
                    system=self.system if system is None else system, user=user
                )
            else:
                text = self.turn_template.format(user=user)
            pieces += [(text, False), (self.completion(answer), True)]
        return pieces

    def record_segments(self, record: dict[str, Any]) -> list[tuple[str, bool]]:
        """`segments` of a prepared record (data/*.jsonl): its `history` turns, then the
        instruction/input and output, with the record's own `system` prompt when it has one."""
        turns = [(u, a) for u, a in record.get("history") or []]
        turns.append((self.user_text(record["instruction"], record.get("input", "")), record["output"]))
        return self.segments(turns, record.get("system"))

    def clean_answer(self, generated: str) -> str:
        """Cut a generated continuation at the first end marker and strip it."""
        cut = len(generated)
        for marker in self.stop:
            pos = generated.find(marker)
            if pos != -1:
                cut = min(cut, pos)
        return generated[:cut].strip()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


# The Ollama TEMPLATEs range over .Messages, so /api/chat keeps the history: system, then each user
# turn with the assistant prefix, each answer with its end marker, exactly the text of `segments`
# (checked by trainer/modelfile.py with trainer/go_template.py). Ollama puts the Modelfile SYSTEM in
# as the first message; the empty system block covers a conversation without one, as training does.
_LLAMA2_TEMPLATE = (
    "{{- range $i, $m := .Messages }}\n"
    '{{- if eq $m.Role "system" }}[INST] <<SYS>>\n{{ $m.Content }}\n<</SYS>>\n\n'
    '{{ else if eq $m.Role "user" }}'
    "{{ if eq $i 0 }}[INST] <<SYS>>\n\n<</SYS>>\n\n{{ else if gt $i 1 }}<s>[INST] {{ end }}"
    "{{ $m.Content }} [/INST]\n"
    '{{- else if eq $m.Role "assistant" }} {{ $m.Content }} </s>\n'
    "{{- end }}\n"
    "{{- end }}"
)
_CHATML_TEMPLATE = (
    "{{- range $i, $m := .Messages }}\n"
    '{{- if eq $m.Role "system" }}<|im_start|>system\n{{ $m.Content }}<|im_end|>\n'
    '{{ else if eq $m.Role "user" }}'
    "{{ if eq $i 0 }}<|im_start|>system\n<|im_end|>\n{{ end }}"
    "<|im_start|>user\n{{ $m.Content }}<|im_end|>\n<|im_start|>assistant\n"
    '{{ else if eq $m.Role "assistant" }}{{ $m.Content }}<|im_end|>\n'
    "{{ end }}\n"
    "{{- end }}"
)

_FORMATS: dict[str, dict[str, Any]] = {
    # Meta's Llama-2 chat format; the official Ollama llama2 template has the same shape.
    "llama2": {
        "prompt_template": "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]",
        "completion_template": " {answer} </s>",
        "ollama_template": _LLAMA2_TEMPLATE,
        "stop": ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "</s>"),
        # Every later turn opens with BOS, as in Meta's reference chat code.
        "turn_template": "<s>[INST] {user} [/INST]",
    },
    # ChatML, the template shipped with SmolLM2-Instruct (and Qwen).
    "chatml": {
        "prompt_template": "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n",
        "completion_template": "{answer}<|im_end|>",
        "ollama_template": _CHATML_TEMPLATE,
        "stop": ("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
        "turn_template": "\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
    },
}

# The single-turn TEMPLATEs written before the .Messages ones: the same prompt text for one turn,
# replaced on load so that a run folder prepared earlier exports a TEMPLATE that keeps the history.
_LEGACY_TEMPLATES = {
    "llama2": "[INST] <<SYS>>\n{{ .System }}\n<</SYS>>\n\n{{ .Prompt }} [/INST]",
    "chatml": "<|im_start|>system\n{{ .System }}<|im_end|>\n<|im_start|>user\n{{ .Prompt }}<|im_end|>\n"
    "<|im_start|>assistant\n",
}

FILE_NAME = "prompt_format.json"


def names() -> list[str]:
    return sorted(_FORMATS)


def build(name: str, system: str) -> PromptFormat:
    spec = _FORMATS[name]
    return PromptFormat(name=name, system=system, **spec)


def detect(chat_template: str | None) -> str:
    """Pick the format matching a tokenizer's own chat template (Llama-2 when it has none)."""
    if chat_template and "<|im_start|>" in chat_template:
        return "chatml"
    return "llama2"


def save(fmt: PromptFormat, path: Path) -> None:
    write_json(path, fmt.to_dict())


def load(run_dir: Path) -> PromptFormat:
    data = read_json(Path(run_dir) / FILE_NAME)
    data["stop"] = tuple(data["stop"])
    name = data.get("name")
    if name in _FORMATS and data.get("ollama_template") == _LEGACY_TEMPLATES.get(name):
        data["ollama_template"] = _FORMATS[name]["ollama_template"]
    return PromptFormat(**data)
