"""Ollama's prompt rendering: the Go text/template subset our Modelfile TEMPLATEs use, and the rules
by which Ollama fills a template for /api/generate and /api/chat.

Used by `python run.py export` (trainer/modelfile.py refuses a TEMPLATE that does not reproduce the
training text) and by the tests that compare multi-turn conversations with the training format.
Reads and writes nothing.

What Ollama does (server/routes.go, server/prompt.go, template/template.go of Ollama 0.33):
- /api/generate builds the messages [system: the request's or the Modelfile's SYSTEM, if any]
  + [user: the prompt]; /api/chat takes the request's messages and puts the Modelfile's SYSTEM in
  front when the first message is not a system message.
- Consecutive messages of one role are joined with a blank line ("collate").
- A template that mentions `.Messages` is executed once with `.Messages` (system messages
  included) and `.System` (the system messages joined). Any other template is executed once per
  user turn with `.System`, `.Prompt` and `.Response` (appended at the end when the template
  lacks it), so it sees no history beyond the turn itself.

The Go subset: text, `{{ .X }}`, `{{ $v.X }}`, `{{ if }}…{{ else if }}…{{ else }}…{{ end }}`,
`{{ range .Messages }}` / `{{ range $i, $m := .Messages }}`, comments, `{{- ` / ` -}}` trimming,
string and integer literals, parentheses and the functions eq, ne, lt, le, gt, ge, and, or, not,
len. Anything else raises `TemplateError`, never a silent difference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class TemplateError(ValueError):
    """A template outside the supported Go subset, or one Go itself would reject."""


Message = dict[str, str]  # {"role": ..., "content": ...}

# ---------------------------------------------------------------------------------------------
# Lexing: text and actions, with Go's trim markers applied

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)
_GO_SPACE = " \t\r\n"


def _pieces(template: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", body)] with Go's `{{- ` / ` -}}` trimming applied to the text."""
    pieces: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        body = match.group(1)
        # Go: a trim marker is "-" plus one space-like character, on the inner side of the braces.
        trim_left = len(body) >= 2 and body[0] == "-" and body[1] in _GO_SPACE
        trim_right = len(body) >= 2 and body[-1] == "-" and body[-2] in _GO_SPACE
        if trim_next:
            text = text.lstrip(_GO_SPACE)
        if trim_left:
            text = text.rstrip(_GO_SPACE)
            body = body[1:]
        if trim_right:
            body = body[:-1]
        pieces.append(("text", text))
        pieces.append(("action", body.strip()))
        pos, trim_next = match.end(), trim_right
    tail = template[pos:]
    if "{{" in tail:
        raise TemplateError("unclosed action '{{' in template")
    pieces.append(("text", tail.lstrip(_GO_SPACE) if trim_next else tail))
    return pieces


_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|\(|\)|:=|,|[^\s(),]+')


def _words(expr: str) -> list[str]:
    return _WORD.findall(expr)


# ---------------------------------------------------------------------------------------------
# Parsing: a tree of nodes


@dataclass
class _Expr:
    """A command: an operand alone, or a function applied to operands."""

    head: str
    args: list[Any] = field(default_factory=list)  # str words or nested _Expr


@dataclass
class _Node:
    kind: str  # text | output | if | range
    text: str = ""
    expr: _Expr | None = None
    body: list[_Node] = field(default_factory=list)
    # if: (condition, body) pairs after the first; both: the else body
    elifs: list[tuple[_Expr, list[_Node]]] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)
    names: tuple[str, ...] = ()  # range variables


def _parse_expr(words: list[str], expr_text: str) -> _Expr:
    def operand(pos: int) -> tuple[Any, int]:
        if pos >= len(words):
            raise TemplateError(f"missing operand in {{{{ {expr_text} }}}}")
        word = words[pos]
        if word == "(":
            inner, pos = command(pos + 1)
            if pos >= len(words) or words[pos] != ")":
                raise TemplateError(f"unclosed '(' in {{{{ {expr_text} }}}}")
            return inner, pos + 1
        return word, pos + 1

    def command(pos: int) -> tuple[_Expr, int]:
        head, pos = operand(pos)
        if isinstance(head, _Expr):
            return head, pos
        args: list[Any] = []
        while pos < len(words) and words[pos] != ")":
            arg, pos = operand(pos)
            args.append(arg)
        if args and head not in _FUNCTIONS:
            raise TemplateError(f"unsupported function {head!r} in {{{{ {expr_text} }}}}")
        return _Expr(head, args), pos

    if "|" in words:
        raise TemplateError(f"pipelines are not supported: {{{{ {expr_text} }}}}")
    parsed, pos = command(0)
    if pos != len(words):
        raise TemplateError(f"cannot read {{{{ {expr_text} }}}}")
    return parsed


def _range_header(rest: str) -> tuple[tuple[str, ...], _Expr]:
    words = _words(rest)
    if ":=" in words:
        at = words.index(":=")
        names = tuple(w for w in words[:at] if w != ",")
        if not 1 <= len(names) <= 2 or not all(re.fullmatch(r"\$\w+", n) for n in names):
            raise TemplateError(f"bad range variables in {{{{ range {rest} }}}}")
        return names, _parse_expr(words[at + 1 :], rest)
    return (), _parse_expr(words, rest)


def _parse(template: str) -> list[_Node]:
    """The tree of `template`; TemplateError when it is malformed or outside the subset."""
    root: list[_Node] = []
    # Open blocks: (node, the list its next nodes go to)
    stack: list[tuple[_Node, list[_Node]]] = []
    current = root
    for kind, body in _pieces(template):
        if kind == "text":
            if body:
                current.append(_Node("text", text=body))
            continue
        if body.startswith("/*") and body.endswith("*/"):
            continue
        head, _, rest = body.partition(" ")
        rest = rest.strip()
        if head == "if":
            node = _Node("if", expr=_parse_expr(_words(rest), rest))
            current.append(node)
            stack.append((node, current))
            current = node.body
        elif head == "range":
            names, expr = _range_header(rest)
            node = _Node("range", expr=expr, names=names)
            current.append(node)
            stack.append((node, current))
            current = node.body
        elif head == "else":
            if not stack or current is stack[-1][0].orelse:
                raise TemplateError("{{ else }} without a matching {{ if }} or {{ range }}")
            node = stack[-1][0]
            if rest.startswith("if ") and node.kind == "if":
                cond = rest[3:].strip()
                node.elifs.append((_parse_expr(_words(cond), cond), []))
                current = node.elifs[-1][1]
            elif not rest:
                current = node.orelse
            else:
                raise TemplateError(f"unsupported {{{{ {body} }}}}")
        elif head == "end" and not rest:
            if not stack:
                raise TemplateError("{{ end }} without a matching {{ if }} or {{ range }}")
            _, current = stack.pop()
        elif head in ("with", "define", "template", "block", "break", "continue"):
            raise TemplateError(f"{{{{ {head} }}}} is not supported here")
        else:
            current.append(_Node("output", expr=_parse_expr(_words(body), body)))
    if stack:
        raise TemplateError(f"{{{{ {stack[-1][0].kind} }}}} without {{{{ end }}}}")
    return root


# ---------------------------------------------------------------------------------------------
# Execution


def _truth(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings, slices and maps are false."""
    return bool(value)


def _compare(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def compare(a: Any, b: Any) -> bool:
        if type(a) is not type(b) and not (isinstance(a, int) and isinstance(b, int)):
            raise TemplateError(f"incompatible types for comparison: {a!r} and {b!r}")
        return op(a, b)

    return compare


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("eq needs at least two arguments")
    return any(_compare(lambda a, b: a == b)(first, o) for o in others)


def _and(*args: Any) -> Any:
    for arg in args:
        if not _truth(arg):
            return arg
    return args[-1]


def _or(*args: Any) -> Any:
    for arg in args:
        if _truth(arg):
            return arg
    return args[-1]


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _compare(lambda a, b: a < b),
    "le": _compare(lambda a, b: a <= b),
    "gt": _compare(lambda a, b: a > b),
    "ge": _compare(lambda a, b: a >= b),
    "and": _and,
    "or": _or,
    "not": lambda a: not _truth(a),
    "len": len,
}


@dataclass
class _Scope:
    dot: Any
    root: Any
    variables: dict[str, Any]


def _lookup(value: Any, path: list[str], what: str) -> Any:
    for name in path:
        if not isinstance(value, dict) or name not in value:
            raise TemplateError(f"template field {what} is not supported here")
        value = value[name]
    return value


def _value(word: Any, scope: _Scope) -> Any:
    if isinstance(word, _Expr):
        return _call(word, scope)
    if word.startswith('"'):
        try:
            return json.loads(word)  # Go's double-quoted strings read like JSON's
        except json.JSONDecodeError:
            raise TemplateError(f"cannot read the string {word}") from None
    if re.fullmatch(r"-?\d+", word):
        return int(word)
    if word in ("true", "false"):
        return word == "true"
    if word == ".":
        return scope.dot
    if word.startswith("."):
        return _lookup(scope.dot, word[1:].split("."), word)
    if word.startswith("$"):
        name, *path = word.split(".")
        if name == "$":
            return _lookup(scope.root, path, word)
        if name not in scope.variables:
            raise TemplateError(f"undefined variable {name}")
        return _lookup(scope.variables[name], path, word)
    raise TemplateError(f"unsupported template word {word!r}")


def _call(expr: _Expr, scope: _Scope) -> Any:
    if expr.head not in _FUNCTIONS:
        return _value(expr.head, scope)
    args = [_value(a, scope) for a in expr.args]
    try:
        return _FUNCTIONS[expr.head](*args)
    except TypeError:
        raise TemplateError(f"wrong arguments for {expr.head}: {args!r}") from None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<no value>"
    if isinstance(value, (dict, list)):
        raise TemplateError("a template prints a map or list (a field is missing)")
    return str(value)


def _execute(nodes: list[_Node], scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "output":
            out.append(_text(_call(node.expr, scope)))
        elif node.kind == "if":
            branches = [(node.expr, node.body), *node.elifs]
            for cond, body in branches:
                if _truth(_call(cond, scope)):
                    _execute(body, scope, out)
                    break
            else:
                _execute(node.orelse, scope, out)
        else:  # range
            items = _call(node.expr, scope)
            if not isinstance(items, list):
                raise TemplateError("range over something that is not a list")
            for i, item in enumerate(items):
                # Go: `range $i, $m :=` binds index and element, `range $m :=` the element.
                values = (i, item)[-len(node.names) :] if node.names else ()
                names = dict(zip(node.names, values, strict=True))
                inner = _Scope(item, scope.root, {**scope.variables, **names})
                _execute(node.body, inner, out)
            if not items:
                _execute(node.orelse, scope, out)


def _run(tree: list[_Node], data: dict[str, Any]) -> str:
    out: list[str] = []
    _execute(tree, _Scope(data, data, {"$": data}), out)
    return "".join(out)


def _fields(nodes: list[_Node]) -> set[str]:
    """Lower-cased names of every field the template mentions (Ollama's Template.Vars)."""
    found: set[str] = set()

    def words(expr: _Expr | None) -> None:
        if expr is None:
            return
        for word in [expr.head, *expr.args]:
            if isinstance(word, _Expr):
                words(word)
            elif isinstance(word, str) and "." in word and not word.startswith('"'):
                found.update(part.lower() for part in word.split(".")[1:] if part)

    for node in nodes:
        words(node.expr)
        for cond, body in node.elifs:
            words(cond)
            found |= _fields(body)
        found |= _fields(node.body) | _fields(node.orelse)
    return found


# ---------------------------------------------------------------------------------------------
# Ollama's rules


def collate(messages: list[Message]) -> tuple[str, list[Message]]:
    """Ollama's collate: the system messages joined, and consecutive same-role messages merged."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    merged: list[Message] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1] = {**merged[-1], "content": merged[-1]["content"] + "\n\n" + m["content"]}
        else:
            merged.append(dict(m))
    return "\n\n".join(system), merged


def _as_go(message: Message) -> dict[str, str]:
    return {"Role": message["role"], "Content": message["content"]}


def render(template: str, messages: list[Message]) -> str:
    """The prompt text Ollama renders from `template` for `messages` (Template.Execute)."""
    system, merged = collate(messages)
    tree = _parse(template)
    fields = _fields(tree)
    if "messages" in fields:
        data = {"System": system, "Messages": [_as_go(m) for m in merged], "Response": ""}
        return _run(tree, data)
    if "response" in fields:
        raise TemplateError("templates with .Response are not supported here")
    # Once per user turn, the answer appended (Ollama appends {{ .Response }} to such templates).
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}
    for m in merged:
        role = m["role"]
        if (role == "system" and (turn["Prompt"] or turn["Response"])) or (
            role == "user" and turn["Response"]
        ):
            out.append(_run(tree, turn) + turn["Response"])
            turn = {"System": "", "Prompt": "", "Response": ""}
        key = {"system": "System", "user": "Prompt", "assistant": "Response"}.get(role)
        if key:
            turn[key] = m["content"]
    out.append(_run(tree, turn) + turn["Response"])
    return "".join(out)


def generate_prompt(template: str, system: str, prompt: str) -> str:
    """What Ollama asks the model for POST /api/generate {"prompt": prompt} under SYSTEM `system`."""
    messages = [{"role": "system", "content": system}] if system else []
    return render(template, [*messages, {"role": "user", "content": prompt}])


def chat_prompt(template: str, system: str, messages: list[Message]) -> str:
    """What Ollama asks the model for POST /api/chat {"messages": messages} under SYSTEM `system`."""
    if system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}, *messages]
    return render(template, messages)
