"""What a GGUF file holds, read from its header with the `gguf` package (no weights are loaded).

The project's one GGUF header reader. Used by `python -m benchmarks` and `python run.py benchmark`:
quantization (`general.file_type`), tensor bytes and parameter count (for the roofline), the
attention shape (KV-cache bytes per position), the end-of-generation token ids (suppressed so
llama.cpp generates a fixed number of tokens) and the chat template (to pick the prompt format of
a bare GGUF); its architecture, file type, tensor count and context length are what the export
stage records. Reads one `.gguf` file, writes nothing.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import UserError

GGUF_MAGIC = b"GGUF"

# Token texts llama.cpp itself treats as end of generation (llama-vocab.cpp), besides the
# eos/eot/eom ids in the header.
EOG_TEXTS = (
    "</s>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<end_of_turn>",
    "<EOT>",
    "<｜end▁of▁sentence｜>",
)


@dataclass
class GGUFInfo:
    path: str
    file_size_bytes: int
    architecture: str
    file_type: int | None
    quantization: str
    tensor_count: int
    tensor_bytes: int
    params: int
    n_layer: int | None
    n_head: int | None
    n_head_kv: int | None
    head_dim: int | None
    context_length: int | None
    eog_token_ids: list[int] = field(default_factory=list)
    chat_template: str | None = None

    def kv_bytes_per_position(self, bytes_per_element: int = 2) -> int | None:
        """K and V for one token position over all layers (llama.cpp's default KV type is f16)."""
        if not (self.n_layer and self.n_head_kv and self.head_dim):
            return None
        return 2 * self.n_layer * self.n_head_kv * self.head_dim * bytes_per_element

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("chat_template")
        return data


def file_type_name(file_type: int | None) -> str:
    """`general.file_type` as llama.cpp names it: 3 -> "Q4_1", 15 -> "Q4_K_M"."""
    if file_type is None:
        return "unknown"
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return f"file_type {file_type}"
    for prefix in ("MOSTLY_", "ALL_"):
        name = name.removeprefix(prefix)
    return name


def check_gguf(path: Path) -> None:
    """A clear error for a missing or non-GGUF model file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"model file {path} does not exist.",
            fix="pass an existing .gguf file to --model (or run `python run.py export` first)",
        )
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise UserError(
            f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF').",
            fix="pass a .gguf file (the export stage writes models/*.gguf)",
        )


def _scalar(fields: dict[str, Any], key: str) -> Any:
    fld = fields.get(key)
    if fld is None:
        return None
    try:
        return fld.contents()
    except (IndexError, ValueError, TypeError):
        return None


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> GGUFInfo:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read the GGUF header of {path}: {exc}") from None
    fields = reader.fields
    arch = _scalar(fields, "general.architecture") or "unknown"
    file_type = _scalar(fields, "general.file_type")
    n_head = _scalar(fields, f"{arch}.attention.head_count")
    n_head_kv = _scalar(fields, f"{arch}.attention.head_count_kv") or n_head
    n_embd = _scalar(fields, f"{arch}.embedding_length")
    head_dim = _scalar(fields, f"{arch}.attention.key_length")
    if head_dim is None and n_embd and n_head:
        head_dim = int(n_embd) // int(n_head)
    # head_count(_kv) may be per-layer arrays in some architectures; take the first layer's.
    if isinstance(n_head_kv, list):
        n_head_kv = n_head_kv[0] if n_head_kv else None
    if isinstance(n_head, list):
        n_head = n_head[0] if n_head else None

    eog: set[int] = set()
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        value = _scalar(fields, key)
        if isinstance(value, int):
            eog.add(value)
    tokens_field = fields.get("tokenizer.ggml.tokens")
    if tokens_field is not None:
        wanted = set(EOG_TEXTS)
        for i, text in enumerate(tokens_field.contents()):
            if text in wanted:
                eog.add(i)

    return GGUFInfo(
        path=path,
        file_size_bytes=size,
        architecture=str(arch),
        file_type=int(file_type) if file_type is not None else None,
        quantization=file_type_name(int(file_type) if file_type is not None else None),
        tensor_count=len(reader.tensors),
        tensor_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        params=sum(int(t.n_elements) for t in reader.tensors),
        n_layer=_scalar(fields, f"{arch}.block_count"),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=int(head_dim) if head_dim else None,
        context_length=_scalar(fields, f"{arch}.context_length"),
        eog_token_ids=sorted(eog),
        chat_template=_scalar(fields, "tokenizer.chat_template"),
    )


def read_gguf(path: str | Path) -> GGUFInfo:
    """Header facts of a GGUF file (cached per path and modification time)."""
    path = Path(path).resolve()
    check_gguf(path)
    stat = path.stat()
    return _read_cached(str(path), stat.st_mtime_ns, stat.st_size)
