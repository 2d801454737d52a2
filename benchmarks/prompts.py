"""The benchmark's prompts: the shipped, versioned Chinese set and how each request's text is built.

Used by `python -m benchmarks` and `python run.py benchmark`. Reads `benchmarks/prompts_zh.jsonl`
(or `--prompts FILE`: JSONL with `version`, `id`, `prompt`); writes nothing.

Every request's text starts with a random tag (`<6 hex digits>#<request number>`, the random part
first), placed before the system prompt, so neither llama.cpp's prefix reuse nor Ollama's prompt
cache can serve more than the format's first marker (`<|im_start|>system\n`: 3 tokens) from an
earlier request, in this run or a previous one, warm-up included: TTFT includes processing the
whole prompt. The rest of the text is the model's own prompt
format (`trainer.prompt_format`), exactly as in training.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import UserError
from trainer.prompt_format import PromptFormat

SHIPPED = Path(__file__).resolve().parent / "prompts_zh.jsonl"
SANITY_PROMPT = {"id": "sanity", "prompt": "你好，请用一句话介绍你自己。"}


@dataclass(frozen=True)
class PromptSet:
    path: str
    version: str
    sha256: str
    items: tuple[dict[str, str], ...]

    def describe(self) -> dict[str, object]:
        return {"file": self.path, "version": self.version, "count": len(self.items), "sha256": self.sha256}


def load_prompts(path: str | Path | None = None) -> PromptSet:
    """Read and check a prompt set; every problem is reported at once."""
    path = Path(path) if path else SHIPPED
    if not path.is_file():
        raise UserError(f"prompt file {path} does not exist.", fix="pass an existing JSONL file to --prompts")
    raw = path.read_bytes()
    problems: list[str] = []
    items: list[dict[str, str]] = []
    versions: set[str] = set()
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{number}: not valid JSON ({exc.msg})")
            continue
        missing = [
            k for k in ("version", "id", "prompt") if not isinstance(row.get(k), str) or not row[k].strip()
        ]
        if missing:
            problems.append(f"{path}:{number}: missing or empty field(s) {', '.join(missing)}")
            continue
        versions.add(row["version"])
        items.append({"id": row["id"], "prompt": row["prompt"].strip(), "category": row.get("category", "")})
    if not items and not problems:
        problems.append(f"{path}: no prompts")
    if len(versions) > 1:
        problems.append(f"{path}: mixed versions {sorted(versions)}; one file is one version")
    if problems:
        raise UserError(
            "the benchmark prompt file has problems:\n  " + "\n  ".join(problems),
            fix='one JSON object per line: {"version": "...", "id": "...", "prompt": "..."}',
        )
    return PromptSet(str(path), versions.pop(), hashlib.sha256(raw).hexdigest(), tuple(items))


def cache_tag(number: int) -> str:
    """Random first, so two requests' token sequences part at the tag's first token."""
    return f"{secrets.token_hex(3)}#{number}"


def render(fmt: PromptFormat | None, question: str, tag: str) -> str:
    """The full prompt text sent to a raw-completion engine, tag first."""
    if fmt is None:
        return f"{tag} {question}"
    tagged = PromptFormat(**{**fmt.to_dict(), "stop": fmt.stop, "system": f"{tag} {fmt.system}"})
    return tagged.prompt(question)
