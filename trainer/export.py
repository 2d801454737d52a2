"""Export stage: `python run.py export` — merged model, GGUF (F16) and a quantized GGUF, Modelfile.

Reads `adapter/` (with `base_model.txt`) and `prompt_format.json`. Writes:
- `models/finetuned/`: the adapter merged into the base, safetensors in `export.merged_dtype`,
  with the tokenizer (and `tokenizer.model` when the base has one) and the prompt format;
- `models/gguf/model-f16.gguf`: llama.cpp's own converter (`convert_hf_to_gguf.py` with its bundled
  gguf-py, from the llama-cpp-python source distribution unpacked by trainer/bootstrap.py);
- `models/gguf/model-<QUANT>.gguf`: quantized by libllama (`llama_model_quantize`), Q4_K_M default;
- `models/gguf/Modelfile`: for Ollama (trainer/modelfile.py).
The quantized file is checked: its header (architecture, file type, tensor count) is read back and
llama.cpp loads it and generates a few tokens. A failed step removes its partial file.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from trainer import console, gguf_generate, gguf_info, prompt_format
from trainer.config import PipelineConfig
from trainer.errors import UserError
from trainer.paths import LLAMA_CPP_CONVERTER
from trainer.results import ExportResult, GgufVerification, ModelFile, or_not_measured
from trainer.runfolder import RunDir, atomic_dir, atomic_path, dir_bytes, read_jsonl

GGUF_DIR = "models/gguf"
MERGED_DIR = "models/finetuned"
# llama.cpp's llama_ftype values (llama.h): the header's general.file_type.
FILE_TYPES = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17}


def merge(run_dir: RunDir, cfg: PipelineConfig) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise UserError(f"{adapter} has no trained adapter.", fix="run `python run.py train` first")
    base_ref = (adapter / "base_model.txt").read_text().strip()
    # Merge in fp32 (a 4-bit base cannot be merged; the 16-bit base is reloaded here), then cast.
    base = AutoModelForCausalLM.from_pretrained(
        base_ref, dtype=torch.float32, trust_remote_code=cfg.model.trust_remote_code
    )
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged = merged.to(getattr(torch, cfg.export.merged_dtype))
    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    target = run_dir / MERGED_DIR
    with atomic_dir(target) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        sp_model = Path(base_ref) / "tokenizer.model"
        if sp_model.exists():  # llama.cpp's converter reads SentencePiece vocabularies from it
            shutil.copy(sp_model, tmp / "tokenizer.model")
        shutil.copy(adapter / prompt_format.FILE_NAME, tmp / prompt_format.FILE_NAME)
    return target


def converter_script() -> Path:
    script = LLAMA_CPP_CONVERTER
    if not script.exists():
        raise UserError(
            f"llama.cpp's converter is missing ({script}).",
            fix="run `python3 -m trainer.bootstrap` (it unpacks the llama-cpp-python source distribution)",
        )
    return script


def convert_f16(model_dir: Path, out: Path) -> None:
    script = converter_script()
    env = dict(os.environ, PYTHONPATH=str(script.parent / "gguf-py"))  # its own gguf-py, not PyPI's
    with atomic_path(out) as tmp:
        proc = subprocess.run(
            [sys.executable, str(script), str(model_dir), "--outfile", str(tmp), "--outtype", "f16"],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            hint = ""
            if "pre-tokenizer" in tail:
                hint = " The tokenizer's BPE pre-tokenizer is unknown to this llama.cpp version."
            raise UserError(
                f"GGUF conversion of {model_dir} failed.{hint}\n{tail}",
                fix="check that the model folder has config.json, safetensors and a tokenizer llama.cpp "
                "knows (SentencePiece tokenizer.model or a known BPE tokenizer.json)",
            )


def quantize(src: Path, out: Path, quant: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FILE_TYPES[quant]
    params.nthread = os.cpu_count() or 1
    with atomic_path(out) as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise UserError(f"llama_model_quantize({src.name} -> {quant}) returned {rc}.")


def read_header(path: Path) -> dict[str, Any]:
    """The header facts export.json records, from the one GGUF reader (trainer/gguf_info.py)."""
    info = gguf_info.read_gguf(path)
    return {
        "architecture": None if info.architecture == "unknown" else info.architecture,
        "file_type": info.file_type,
        "tensor_count": info.tensor_count,
        "context_length": info.context_length,
    }


def run(cfg: PipelineConfig, run_dir: RunDir) -> ExportResult:
    """Merge, convert and quantize the model, check it generates, write the Modelfile; returns the
    results that go into `export.json`. Each file is saved by its own step, atomically."""
    fmt = prompt_format.load(run_dir)
    line = console.line()
    line.total(4)
    line.status("merge the adapter")
    merged = merge(run_dir, cfg)  # models/finetuned/
    line.advance()
    line.status(f"convert to GGUF and quantize ({cfg.export.quantization})")
    f16, final, header = _to_gguf(run_dir, merged, cfg.export.quantization)  # models/gguf/*.gguf
    line.advance()
    line.status("generate with llama.cpp")
    prompt, text = _verify(run_dir, final, header, fmt, cfg)
    line.advance()
    modelfile = _write_modelfile(run_dir, fmt, final, cfg)  # models/gguf/Modelfile
    line.advance()
    line.status(f"{cfg.export.quantization} GGUF {final.stat().st_size / 1e6:.1f} MB")
    rel = lambda p: str(Path(p).relative_to(run_dir.path))  # noqa: E731
    quant = cfg.export.quantization
    return ExportResult(
        merged=ModelFile(path=MERGED_DIR, size_bytes=dir_bytes(merged), dtype=cfg.export.merged_dtype),
        gguf_f16=ModelFile(path=rel(f16), size_bytes=f16.stat().st_size),
        gguf=ModelFile(
            path=rel(final),
            size_bytes=final.stat().st_size,
            quantization=quant,
            file_type=header["file_type"],
        ),
        verification=GgufVerification(
            # A header field the file lacks is null (read_header gives None).
            architecture=or_not_measured(header["architecture"]),
            file_type=header["file_type"],  # checked against the quantization by _to_gguf
            tensor_count=header["tensor_count"],
            context_length=or_not_measured(header["context_length"]),
            prompt=prompt,
            generated_text=text,
            tokens=cfg.export.verify_tokens,
        ),
        modelfile=rel(modelfile),
        llama_cpp_python=importlib.metadata.version("llama_cpp_python"),
        headline=f"{quant} GGUF {final.stat().st_size / 1e6:.1f} MB (F16 {f16.stat().st_size / 1e6:.1f} MB); "
        f"llama.cpp generated {len(text)} chars",
        notes=[],
    )


def _to_gguf(run_dir: RunDir, merged: Path, quant: str) -> tuple[Path, Path, dict[str, Any]]:
    """(the F16 GGUF, the final GGUF in `quant`, the final file's header, checked)."""
    gguf_dir = run_dir / GGUF_DIR
    gguf_dir.mkdir(parents=True, exist_ok=True)
    f16 = gguf_dir / "model-f16.gguf"
    convert_f16(merged, f16)
    final = f16
    if quant != "F16":
        final = gguf_dir / f"model-{quant}.gguf"
        with console.printed_to_log(run_dir):  # llama.cpp's loader and per-tensor lines
            quantize(f16, final, quant)
    header = read_header(final)
    if header["file_type"] != FILE_TYPES[quant]:
        raise UserError(
            f"{final}: header file type {header['file_type']}, expected {FILE_TYPES[quant]} ({quant})."
        )
    return f16, final, header


def _verify(
    run_dir: RunDir, final: Path, header: dict[str, Any], fmt: prompt_format.PromptFormat, cfg: PipelineConfig
) -> tuple[str, str]:
    """(prompt, generated text): llama.cpp loads the GGUF and generates; a file it cannot run is removed."""
    test = read_jsonl(run_dir / "data" / "test.jsonl")
    prompt = test[0]["prompt"] if test else fmt.prompt("你好，请介绍一下你自己。")
    try:
        # Never a context beyond the trained one: llama.cpp then may fail to place the batch.
        n_ctx = min(1024, header["context_length"] or 1024)
        check = gguf_generate.generate(
            final, prompt, max_tokens=cfg.export.verify_tokens, stop=fmt.stop, n_ctx=n_ctx
        )
    except gguf_generate.GGUFRunError:
        final.unlink(missing_ok=True)  # never leave an unusable file that looks exported
        raise
    return prompt, check["text"]


def _write_modelfile(
    run_dir: RunDir, fmt: prompt_format.PromptFormat, final: Path, cfg: PipelineConfig
) -> Path:
    from trainer.modelfile import ModelfileError, write_modelfile

    try:
        return write_modelfile(run_dir, fmt, final, cfg)
    except ModelfileError as exc:
        raise UserError(
            f"cannot write an Ollama Modelfile that reproduces the prompt format: {exc}"
        ) from None
