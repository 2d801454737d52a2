"""Finding English sentences in a rendered report.md (issue #21: the report speaks Chinese).

`english_sentences(markdown)` returns `(line number, English text)` for every stretch of English
prose outside code: fenced blocks, code spans, image/link targets, URLs, paths and file names,
identifiers (`train.backend=peft`, `amx_bf16`, `Q4_K_M`), numbers with units and the technical terms
a Chinese report keeps in Latin letters (LoRA, GGUF, tokens/s, Ollama, llama.cpp ...) are not
prose. A stretch is the Latin text between two non-Latin characters (CJK, full-width punctuation,
a table pipe); it is English prose when it holds at least `MIN_WORDS` plain words: lower-case
alphabetic words that are not an allowed term (two, so that "no Ollama at" is caught). Capitalised words (names: Intel Xeon, Noto Sans)
and allowed terms neither count nor break a stretch, so "no CUDA GPU; this CPU has bf16 units"
still counts five words.
"""

from __future__ import annotations

import re

MIN_WORDS = 2

# Lower-case words a Chinese report writes in Latin letters: units, option values, library and
# tool names, metric and file-format names. Capitalised words are names and never count.
ALLOWED_WORDS = frozenset(
    [
        "s",
        "ms",
        "ns",
        "us",
        "b",
        "kb",
        "mb",
        "gb",
        "tb",
        "kib",
        "mib",
        "gib",
        "tib",
        "tok",
        "tokens",
        "token",
        "tokens/s",
        "tps",
        "it/s",
        "bf16",
        "fp16",
        "fp32",
        "fp8",
        "int4",
        "int8",
        "nf4",
        "f16",
        "f32",
        "q4",
        "q8",
        "amx",
        "avx",
        "avx2",
        "avx512",
        "cuda",
        "cpu",
        "gpu",
        "vram",
        "rss",
        "auto",
        "peft",
        "unsloth",
        "lora",
        "qlora",
        "gguf",
        "llamacpp",
        "ollama",
        "llama",
        "cpp",
        "transformers",
        "trl",
        "torch",
        "pytorch",
        "jieba",
        "nltk",
        "rouge",
        "bleu",
        "distinct",
        "weasyprint",
        "markdown",
        "json",
        "jsonl",
        "csv",
        "yaml",
        "png",
        "pdf",
        "svg",
        "md",
        "alpaca",
        "sharegpt",
        "chatml",
        "llama2",
        "llama3",
        "qwen",
        "qwen2",
        "gemma",
        "mistral",
        "phi",
        "tiny",
        "instruct",
        "linear",
        "cosine",
        "constant",
        "adamw",
        "adamw_torch",
        "adam",
        "sgd",
        "true",
        "false",
        "null",
        "none",
        "p50",
        "p95",
        "p99",
        "ttft",
        "tpot",
        "e2e",
        "api",
        "http",
        "https",
        "localhost",
        "url",
        "nats",
        "dtype",
        "float16",
        "bfloat16",
        "float32",
        "safetensors",
        "modelfile",
        "tensorboard",
        "num_ctx",
        "num_predict",
        "max_new_tokens",
        "max_tokens",
        "eos",
        "bos",
        "instruction",
        "input",
        "output",
        "system",
        "prompt",
        "completion",
        "messages",
        "conversations",
        "role",
        "content",
        "python",
    ]
)

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
# Latin text between non-Latin characters: letters, digits, spaces and ASCII punctuation except the
# table pipe.
_STRETCH = re.compile(r"[ -{}~]+")
_TOKEN = re.compile(r"\S+")
_PLAIN_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_EDGE_PUNCT = "\"'()[]{}<>,;:.!?*"


def _prose_lines(markdown: str) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced blocks, with code spans, link targets and
    URLs removed and Markdown escapes undone."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(markdown.splitlines(), start=1):
        match = _FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker
                continue
            if marker.startswith(fence[0]) and len(marker) >= len(fence):
                fence = None
                continue
        if fence is not None:
            continue
        text = _ESCAPE.sub(lambda m: "\x00" if m.group(1) == "`" else m.group(1), line)
        text = _CODE_SPAN.sub(" ", text).replace("\x00", "`")
        text = _LINK_TARGET.sub("] ", text)
        text = _URL.sub(" ", text)
        out.append((number, text))
    return out


def _is_plain_word(token: str) -> bool:
    """A lower-case English word: not a term, identifier, path, number or unit."""
    word = token.strip(_EDGE_PUNCT)
    if not _PLAIN_WORD.fullmatch(word):
        return False  # digits, `_`, `=`, `/`, `.` inside, or capitalised: a name or identifier
    return (word not in ALLOWED_WORDS and len(word) > 1) or word == "a"


def english_sentences(markdown: str, min_words: int = MIN_WORDS) -> list[tuple[int, str]]:
    """Every stretch of English prose in `markdown` outside code, as (line number, stretch)."""
    found: list[tuple[int, str]] = []
    for number, text in _prose_lines(markdown):
        for stretch in _STRETCH.findall(text):
            words = [t for t in _TOKEN.findall(stretch) if _is_plain_word(t)]
            if len(words) >= min_words:
                found.append((number, stretch.strip()))
    return found


def english_report_lines(markdown: str) -> str:
    """The offending lines, one per line, for an assertion message ("" when there are none)."""
    lines = markdown.splitlines()
    return "\n".join(
        f"line {n}: {stretch!r} in {lines[n - 1][:200]!r}" for n, stretch in english_sentences(markdown)
    )
