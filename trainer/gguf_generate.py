"""Greedy generation from a GGUF file with llama.cpp (llama-cpp-python), always in a child process.

Used by `export` (does the quantized file load and generate?) and by `deploy` (does Ollama answer
what llama.cpp answers for the same GGUF and prompt?). A broken file, or a llama.cpp kernel that
faults on this CPU, can abort or crash the process that loads the model (C++ terminate, SIGSEGV):
in a child process that is a `GGUFRunError` with the exit status and the log tail, never the end of
the pipeline's own process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from trainer.errors import UserError

# The child counts generated tokens itself: llama-cpp-python's create_completion holds back bytes
# of an unfinished UTF-8 character and does not count them against max_tokens, so a model that
# emits stray byte tokens (a barely trained one does) would generate until the context is full and
# fail with "llama_decode returned 1" (measured on the tiny test model).
_CHILD = """
import json, sys
import llama_cpp
from llama_cpp import Llama
args = json.loads(sys.argv[1])
llm = Llama(model_path=args["path"], n_ctx=args["n_ctx"], n_threads=args["threads"],
            n_threads_batch=args["threads"], verbose=False, seed=0)
prompt = llm.tokenize(args["prompt"].encode(), add_bos=True, special=True)
room = max(0, min(args["max_tokens"], args["n_ctx"] - len(prompt)))
out, finish, text = [], "length", ""
if room:
    for tok in llm.generate(prompt, temp=0.0, repeat_penalty=args["repeat_penalty"]):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            finish = "stop"
            break
        out.append(tok)
        text = llm.detokenize(out).decode("utf-8", errors="ignore")
        cut = min((text.find(s) for s in args["stop"] if s and s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
            break
        if len(out) >= room:
            break
print(json.dumps({"text": text, "finish_reason": finish, "tokens": len(out), "prompt_ids": prompt, "ids": out}))
"""


class GGUFRunError(UserError):
    """llama.cpp could not load or run a GGUF file (the child process failed or crashed)."""


def describe_exit(returncode: int) -> str:
    """'exit 2', or 'killed by SIGSEGV (exit -11)' for a signal."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name} (exit {returncode})"
        except ValueError:
            pass
    return f"exit {returncode}"


def generate(
    path: Path,
    prompt: str,
    *,
    max_tokens: int,
    stop: list[str] | tuple[str, ...],
    n_ctx: int,
    threads: int | None = None,
    repeat_penalty: float = 1.0,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Greedy completion of `prompt` (BOS added by llama.cpp when the GGUF asks for it).

    Returns {"text", "finish_reason", "tokens", "prompt_ids", "ids"} (the prompt's and the answer's
    token ids); raises GGUFRunError when the child fails.
    """
    args = {
        "path": str(path),
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stop": list(stop),
        "n_ctx": n_ctx,
        "threads": threads or os.cpu_count() or 1,
        "repeat_penalty": repeat_penalty,
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise GGUFRunError(
            f"llama.cpp did not finish generating from {path.name} within {timeout_s:.0f} s."
        ) from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise GGUFRunError(
            f"llama.cpp could not load or run {path.name} ({describe_exit(proc.returncode)}).\n{tail}",
            fix="check the tokenizer files of the merged model (models/finetuned/) and the converter log; "
            "a crash (SIGSEGV/SIGILL) points at the llama.cpp build: see env.json → llama_cpp_build and "
            "rebuild with `rm -rf ~/.cache/zh-finetune .venv && python3 -m trainer.bootstrap`",
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])
