"""The Ollama Modelfile of the exported GGUF.

`python run.py export` calls `write_modelfile` to write `models/gguf/Modelfile` beside the GGUF;
`python run.py deploy` reads it back with `read_modelfile` and sends the same TEMPLATE, SYSTEM and
PARAMETERs to Ollama's /api/create, so the API path and `ollama create -f Modelfile` build the same
model.

The TEMPLATE is `PromptFormat.ollama_template`, a Go template over `.Messages`; Ollama tokenizes
what it renders, adding BOS itself when the GGUF asks for it (the format has no BOS).
`check_template` renders it the way Ollama does (trainer/go_template.py) for an /api/generate prompt
and a three-turn /api/chat conversation and refuses it unless both equal the training text character
for character. (The template must not use `.System` beside `.Messages`: Ollama passes the system
prompt both ways, and such a template renders it twice, as the recorded exchanges show.)

`parse_modelfile` follows Ollama's own Modelfile parser (parser/parser.go): what it reads back is
what `ollama create` would see.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import go_template
from trainer.config import PipelineConfig
from trainer.prompt_format import PromptFormat
from trainer.runfolder import RunDir, write_text

FILE_NAME = "Modelfile"
# Where export writes the Modelfile, relative to the run folder (docs/ARTIFACTS.md).
RUN_PATH = "models/gguf/Modelfile"


class ModelfileError(ValueError):
    """A Modelfile Ollama would reject or read differently from what we meant."""


# ---------------------------------------------------------------------------------------------
# Writing


def _check_block(kind: str, text: str) -> None:
    """Refuse text that Ollama's Modelfile parser would change or cut."""
    if '"""' in text:
        raise ModelfileError(f'{kind} contains """, which ends a Modelfile string early.')
    for ch in text:
        # Ollama keeps a character only if Go's strconv.IsPrint says so (letters, marks, numbers,
        # punctuation, symbols, ASCII space), plus newline/tab inside quotes. Python's isprintable
        # draws the same line, so e.g. an ideographic space U+3000 would silently vanish.
        if ch not in "\n\t" and not ch.isprintable():
            raise ModelfileError(
                f"{kind} contains the character U+{ord(ch):04X}, which Ollama's Modelfile parser drops."
            )


def render_modelfile(fmt: PromptFormat, gguf_file: str, num_ctx: int, temperature: float) -> str:
    """The Modelfile text: FROM the GGUF beside it, TEMPLATE/SYSTEM/stops of `fmt`, num_ctx, temperature.

    `gguf_file` is the GGUF's name (or path relative to the Modelfile's folder). Raises
    ModelfileError when the template does not reproduce `fmt.prompt` or a value cannot be written.
    """
    if "\n" in gguf_file or not gguf_file.strip():
        raise ModelfileError(f"bad GGUF file name {gguf_file!r}.")
    source = gguf_file if gguf_file.startswith(("./", "../", "/")) else f"./{gguf_file}"
    _check_block("TEMPLATE", fmt.ollama_template)
    _check_block("SYSTEM", fmt.system)
    for marker in fmt.stop:
        if '"' in marker or not marker or marker != marker.strip() or not marker.isprintable():
            raise ModelfileError(f"stop marker {marker!r} cannot be written as a Modelfile parameter.")
    # Never write a Modelfile whose template drifts from the training format: the model would be
    # asked in a shape it was not trained on and ramble or garble Chinese.
    check_template(fmt)
    lines = [
        "# Ollama Modelfile written by `python run.py export` (trainer/modelfile.py).",
        "# Create the model from this folder:  ollama create <name> -f Modelfile",
        f"# TEMPLATE and SYSTEM reproduce the training prompt format '{fmt.name}' (prompt_format.json);",
        "# Ollama adds the BOS token itself when the model wants one.",
        f"FROM {source}",
        f'TEMPLATE """{fmt.ollama_template}"""',
        f'SYSTEM """{fmt.system}"""',
        *(f'PARAMETER stop "{marker}"' for marker in fmt.stop),
        f"PARAMETER num_ctx {int(num_ctx)}",
        f"PARAMETER temperature {float(temperature)!r}",
    ]
    text = "\n".join(lines) + "\n"
    # Read it back the way `ollama create` will, so quoting can never change a value.
    spec = spec_from_text(text, Path("."))
    if (spec.template, spec.system, spec.parameters.get("stop")) != (
        fmt.ollama_template,
        fmt.system,
        list(fmt.stop),
    ):
        raise ModelfileError("the Modelfile does not read back as written (quoting problem).")
    return text


# A probe conversation: /api/generate asks its first turn, /api/chat all three with their history.
_PROBE_TURNS = [
    ("用一句话介绍北京。\n\n北京是中国的首都。", "北京是中国的首都，历史悠久。"),
    ("它有多少人口？", "约两千万。"),
    ("再介绍一下上海。", "上海是中国最大的经济中心之一。"),
]


def check_template(fmt: PromptFormat) -> None:
    """Raise ModelfileError unless Ollama, rendering `fmt.ollama_template` under SYSTEM `fmt.system`,
    asks exactly the training text: one /api/generate prompt and a three-turn /api/chat history."""
    first_user = _PROBE_TURNS[0][0]
    messages: list[go_template.Message] = []
    for user, answer in _PROBE_TURNS:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    segments = fmt.segments(_PROBE_TURNS)
    checks = [
        ("/api/generate", fmt.prompt(first_user), go_template.generate_prompt, first_user),
        ("/api/chat", "".join(text for text, _ in segments[:-1]), go_template.chat_prompt, messages[:-1]),
    ]
    for endpoint, expected, render, request in checks:
        try:
            rendered = render(fmt.ollama_template, fmt.system, request)
        except go_template.TemplateError as exc:
            raise ModelfileError(f"the Ollama template of format '{fmt.name}': {exc}") from None
        if rendered != expected:
            raise ModelfileError(
                f"the Ollama template of format '{fmt.name}' does not reproduce its training text "
                f"for {endpoint}:\n  template renders {rendered!r}\n  training text    {expected!r}"
            )


def write_modelfile(run_dir: RunDir | Path, fmt: PromptFormat, gguf_path: Path, cfg: PipelineConfig) -> Path:
    """Write `models/gguf/Modelfile` for `gguf_path` (atomically) and return its path.

    Called by the export stage. num_ctx comes from `cfg.export.num_ctx`; the default temperature
    from `cfg.export.temperature` when that field exists, else `cfg.deploy.temperature`.
    """
    run_path = run_dir.path if isinstance(run_dir, RunDir) else Path(run_dir)
    target = run_path / RUN_PATH
    gguf_path = Path(gguf_path)
    if not gguf_path.is_absolute():
        gguf_path = run_path / gguf_path
    # FROM is relative to the Modelfile's folder, so the folder can be moved or copied whole.
    # (abspath, not resolve: a symlinked GGUF keeps its name in the run folder.)
    relative = os.path.relpath(os.path.abspath(gguf_path), os.path.abspath(target.parent))
    # The Modelfile belongs to the export stage, whose fingerprint covers only the model, data,
    # train and export sections: its temperature should be an export setting.
    temperature = getattr(cfg.export, "temperature", cfg.deploy.temperature)
    text = render_modelfile(fmt, relative, cfg.export.num_ctx, temperature)
    write_text(target, text)
    return target


# ---------------------------------------------------------------------------------------------
# Reading (a port of Ollama's parser/parser.go state machine)

_COMMANDS = {
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
}
_NIL, _NAME, _VALUE, _PARAMETER, _MESSAGE, _COMMENT = range(6)


def _unquote(text: str) -> tuple[str, bool]:
    if text.startswith('"""'):
        if len(text) >= 6 and text.endswith('"""'):
            return text[3:-3], True
        return "", False
    if text.startswith('"'):
        if len(text) >= 2 and text.endswith('"'):
            return text[1:-1], True
        return "", False
    return text, True


def _next_state(ch: str, state: int) -> tuple[int, str | None]:
    """Ollama's parseRuneForState: (next state, character to keep or None)."""
    space, newline = ch in " \t", ch in "\r\n"
    if state == _NIL:
        if ch == "#":
            return _COMMENT, None
        if space or newline:
            return _NIL, None
        return _NAME, ch
    if state == _NAME:
        if ch.isascii() and ch.isalpha():
            return _NAME, ch
        if space:
            return _VALUE, None
        raise ModelfileError(
            "command must be one of " + ", ".join(sorted(_COMMANDS)) + f" (unexpected {ch!r})"
        )
    if state == _VALUE:
        return (_NIL, ch) if space or newline else (_VALUE, ch)
    if state == _PARAMETER:
        if ch.isascii() and (ch.isalnum() or ch == "_"):
            return _PARAMETER, ch
        if space:
            return _VALUE, None
        raise ModelfileError(f"unexpected {ch!r} in a PARAMETER name")
    if state == _MESSAGE:
        if ch.isascii() and ch.isalpha():
            return _MESSAGE, ch
        if space:
            return _VALUE, None
        raise ModelfileError(f"unexpected {ch!r} in a MESSAGE role")
    # comment
    return (_NIL, None) if newline else (_COMMENT, None)


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """Commands as Ollama reads them: [(name, value)], FROM as "model", PARAMETERs by their name."""
    commands: list[tuple[str, str]] = []
    state, buf, name, role, line = _NIL, [], "", "", 1
    for ch in text:
        if ch in "\r\n":
            line += 1
        try:
            nxt, keep = _next_state(ch, state)
        except ModelfileError as exc:
            raise ModelfileError(f"(line {line}): {exc}") from None
        if nxt != state:
            word = "".join(buf)
            if state == _NAME:
                low = word.lower()
                if low not in _COMMANDS:
                    raise ModelfileError(f"(line {line}): unknown command {word!r}")
                if low == "from":
                    name = "model"
                elif low == "parameter":
                    nxt = _PARAMETER
                elif low == "message":
                    nxt, name = _MESSAGE, low
                else:
                    name = low
            elif state == _PARAMETER:
                name = word
            elif state == _MESSAGE:
                if word not in ("system", "user", "assistant"):
                    raise ModelfileError(f"(line {line}): message role must be system, user or assistant")
                role = word
            elif state == _VALUE:
                value, ok = _unquote(word.strip())
                # Inside an open quote, or a space inside a bare value: the value goes on.
                if not ok or ch in " \t":
                    buf.append(ch)
                    continue
                if role:
                    value, role = f"{role}: {value}", ""
                commands.append((name, value))
            buf = []
            state = nxt
        if keep is not None and keep.isprintable():
            buf.append(keep)
    if state == _VALUE:
        value, ok = _unquote("".join(buf).strip())
        if not ok:
            raise ModelfileError("unexpected end of file inside a quoted value")
        commands.append((name, f"{role}: {value}" if role else value))
    elif state not in (_NIL, _COMMENT):
        raise ModelfileError("unexpected end of file")
    if not any(n == "model" for n, _ in commands):
        raise ModelfileError("no FROM line")
    return commands


# Types of the Ollama options a Modelfile PARAMETER may set (api.Options); anything else is a float.
_INT_PARAMETERS = {
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "repeat_last_n",
}
_BOOL_PARAMETERS = {"numa", "use_mmap"}
_FLOAT_PARAMETERS = {
    "temperature",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
}


def _parameter_value(name: str, raw: str) -> Any:
    try:
        if name in _INT_PARAMETERS:
            return int(raw)
        if name in _FLOAT_PARAMETERS:
            return float(raw)
    except ValueError:
        raise ModelfileError(f"PARAMETER {name} {raw!r} is not a number") from None
    if name in _BOOL_PARAMETERS:
        if raw.lower() not in ("true", "false"):
            raise ModelfileError(f"PARAMETER {name} {raw!r} is not true or false")
        return raw.lower() == "true"
    raise ModelfileError(f"unknown PARAMETER {name!r}")


@dataclass
class ModelfileSpec:
    """What /api/create needs from a Modelfile (the GGUF path resolved against its folder)."""

    source: str
    gguf_path: Path | None
    template: str | None
    system: str | None
    parameters: dict[str, Any] = field(default_factory=dict)


def spec_from_text(text: str, folder: Path) -> ModelfileSpec:
    source, template, system = "", None, None
    parameters: dict[str, Any] = {}
    for name, value in parse_modelfile(text):
        if name == "model":
            source = value
        elif name == "template":
            template = value
        elif name == "system":
            system = value
        elif name == "stop":
            parameters.setdefault("stop", []).append(value)
        elif name in ("license", "adapter", "draft", "renderer", "parser", "requires", "message"):
            raise ModelfileError(f"{name.upper()} is not supported by the deploy stage")
        else:
            parameters[name] = _parameter_value(name, value)
    path = Path(source).expanduser()
    gguf_path = path if path.is_absolute() else (folder / path)
    return ModelfileSpec(source, gguf_path.resolve(), template, system, parameters)


def read_modelfile(path: Path) -> ModelfileSpec:
    path = Path(path)
    return spec_from_text(path.read_text(encoding="utf-8-sig"), path.parent)
