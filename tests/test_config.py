"""The typed pipeline config (trainer/config.py) and the shipped configs/*.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stages import STAGES, by_name
from trainer.config import PipelineConfig, load_config, to_yaml
from trainer.errors import UserError
from trainer.pipeline import fingerprint

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TINY = ROOT / "configs" / "tiny.yaml"

# A leaf `key: value` line of a YAML file (not a section header, not a list item, not a comment).
_LEAF = re.compile(r"^\s*[A-Za-z_][\w-]*:\s*(?P<value>\S.*)$")

# Shipped configs whose leaf keys are not all commented yet (STYLE.md: "a comment per key").
_UNCOMMENTED: dict[str, str] = {}


def _config_param(path: Path, bug: dict[str, str] | None = None):
    marks = []
    if bug and path.name in bug:
        marks.append(pytest.mark.xfail(strict=True, reason=f"configs/{path.name}: {bug[path.name]}"))
    return pytest.param(path, id=path.name, marks=marks)


def _message(excinfo: pytest.ExceptionInfo[UserError]) -> str:
    return str(excinfo.value)


def test_configs_are_shipped():
    assert {p.name for p in CONFIGS} >= {"default.yaml", "tiny.yaml", "llama2-7b-chat.yaml"}


@pytest.mark.parametrize("path", [_config_param(p) for p in CONFIGS])
def test_shipped_config_loads_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.run_name == path.stem


@pytest.mark.parametrize("path", [_config_param(p) for p in CONFIGS])
def test_resolved_config_reloads_to_the_same_values(path, tmp_path):
    """config.resolved.yaml in a run folder must reproduce the run's config."""
    cfg = load_config(path)
    resolved = tmp_path / "config.resolved.yaml"
    resolved.write_text(to_yaml(cfg), encoding="utf-8")
    assert load_config(resolved).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("path", [_config_param(p) for p in CONFIGS])
def test_shipped_config_starts_with_the_command_that_runs_it(path):
    head = path.read_text(encoding="utf-8").splitlines()[:6]
    commands = [line for line in head if line.startswith("#") and "python run.py" in line]
    assert commands, f"{path.name}: no `python run.py` command in the first lines"
    assert any(f"--config configs/{path.name}" in line for line in commands)


@pytest.mark.parametrize("path", [_config_param(p, _UNCOMMENTED) for p in CONFIGS])
def test_every_shipped_key_has_a_comment(path):
    uncommented = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LEAF.match(line)
        if match and not match["value"].startswith("#") and " #" not in line:
            uncommented.append(f"line {number}: {line.strip()}")
    assert not uncommented, f"{path.name}: keys without a comment:\n" + "\n".join(uncommented)


def test_llama2_7b_chat_preset_is_the_reference_setup():
    cfg = load_config(ROOT / "configs" / "llama2-7b-chat.yaml")
    assert cfg.model.name == "meta-llama/Llama-2-7b-chat-hf"
    assert cfg.model.name_4bit == "unsloth/llama-2-7b-chat-bnb-4bit"
    assert cfg.model.load_in_4bit is True
    assert cfg.model.prompt_format == "llama2"
    assert cfg.train.lora_r == 8
    assert cfg.train.lora_alpha == 16
    assert cfg.train.lora_dropout == pytest.approx(0.05)
    assert cfg.train.target_modules == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert cfg.train.epochs == 3
    assert cfg.train.per_device_batch_size == 4
    assert cfg.train.gradient_accumulation_steps == 4
    assert cfg.train.learning_rate == pytest.approx(2e-4)
    assert cfg.train.warmup_steps == 100
    assert cfg.data.max_length == 2048
    assert cfg.train.optimizer.startswith("adamw")
    assert cfg.train.precision == "fp16"
    assert cfg.deploy.model_name == "llama2-finetuned"


def test_defaults_then_yaml_then_command_line():
    defaults = PipelineConfig()
    from_yaml = load_config(TINY)
    assert defaults.data.max_length == 512 and from_yaml.data.max_length == 256  # YAML over defaults
    assert from_yaml.data.seed == defaults.data.seed  # keys the YAML does not set keep the default
    overridden = load_config(TINY, ["data.max_length=300", "train.max_steps=3", "run_name=other"])
    assert overridden.data.max_length == 300
    assert overridden.train.max_steps == 3
    assert overridden.run_name == "other"
    assert overridden.train.learning_rate == from_yaml.train.learning_rate


def test_later_override_wins():
    assert load_config(TINY, ["data.seed=1", "data.seed=2"]).data.seed == 2


@pytest.mark.parametrize("key", ["data.no_such_key", "no_such_section", "train.lora_rank"])
def test_unknown_override_key_is_named(key):
    with pytest.raises(UserError) as excinfo:
        load_config(TINY, [f"{key}=1"])
    assert f"'{key}'" in _message(excinfo)
    assert "How to fix" in _message(excinfo)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("data:\n  max_len: 100\n", "data.max_len"),
        ("runname: x\n", "runname"),
        ("model:\n  tiny_vocab: 10\n", "model.tiny_vocab"),
    ],
)
def test_unknown_yaml_key_is_named_with_the_file(tmp_path, yaml_text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(UserError) as excinfo:
        load_config(path)
    assert f"'{key}'" in _message(excinfo)
    assert str(path) in _message(excinfo)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochs=abc", "train.epochs"),
        ("train.lora_r=1.5", "train.lora_r"),
        ("data.strict=maybe", "data.strict"),
        ("data.max_length=long", "data.max_length"),
        ("data=5", "data"),
        ("train.target_modules=[1, [2]]", "train.target_modules[1]"),
    ],
)
def test_wrong_type_is_named(override, key):
    with pytest.raises(UserError) as excinfo:
        load_config(TINY, [override])
    assert f"'{key}'" in _message(excinfo)


def test_wrong_type_in_yaml_is_named_with_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: three\n", encoding="utf-8")
    with pytest.raises(UserError) as excinfo:
        load_config(path)
    assert "'train.epochs'" in _message(excinfo) and str(path) in _message(excinfo)


@pytest.mark.parametrize(
    ("override", "key", "choice"),
    [
        ("data.overlong=cut", "data.overlong", "truncate"),
        ("model.prompt_format=alpaca", "model.prompt_format", "llama2"),
        ("export.quantization=Q3_K", "export.quantization", "Q4_K_M"),
        ("train.precision=fp8", "train.precision", "bf16"),
    ],
)
def test_invalid_choice_names_key_and_choices(override, key, choice):
    with pytest.raises(UserError) as excinfo:
        load_config(TINY, [override])
    assert f"'{key}'" in _message(excinfo)
    assert choice in _message(excinfo)


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.val_size=0.6", "data.test_size=0.5"],
        ["data.val_size=0.5", "data.test_size=0.5"],
    ],
)
def test_split_ratios_that_leave_nothing_to_train_on(overrides):
    with pytest.raises(UserError) as excinfo:
        load_config(TINY, overrides)
    assert "data.val_size" in _message(excinfo) and "data.test_size" in _message(excinfo)
    assert "How to fix" in _message(excinfo)


@pytest.mark.parametrize("override", ["data.val_size=-0.1", "data.test_size=2.5"])
def test_split_size_neither_ratio_nor_count(override):
    with pytest.raises(UserError) as excinfo:
        load_config(TINY, [override])
    assert override.split("=")[0] in _message(excinfo)


def test_split_ratio_plus_count_is_fine():
    cfg = load_config(TINY, ["data.val_size=0.5", "data.test_size=30"])
    assert (cfg.data.val_size, cfg.data.test_size) == (0.5, 30)


def test_list_override_from_comma_separated_text():
    cfg = load_config(TINY, ["data.files=a.jsonl,b.jsonl", "train.target_modules=q_proj, v_proj"])
    assert cfg.data.files == ["a.jsonl", "b.jsonl"]
    assert cfg.train.target_modules == ["q_proj", "v_proj"]


def test_list_override_in_yaml_flow_syntax():
    cfg = load_config(TINY, ["data.files=[a.jsonl, b.jsonl]", "benchmark.concurrency=[1, 8]"])
    assert cfg.data.files == ["a.jsonl", "b.jsonl"]
    assert cfg.benchmark.concurrency == [1, 8]


def test_comma_separated_integer_list_override():
    assert load_config(TINY, ["benchmark.concurrency=1,2"]).benchmark.concurrency == [1, 2]


def test_scientific_notation_learning_rate():
    assert load_config(TINY, ["train.learning_rate=2e-4"]).train.learning_rate == pytest.approx(2e-4)


@pytest.mark.parametrize(
    ("override", "attr", "expected"),
    [
        ("run_name=2024-01-01", ("run_name",), "2024-01-01"),
        ("model.system_prompt=Answer: briefly", ("model", "system_prompt"), "Answer: briefly"),
    ],
    ids=["date-like", "colon-space"],
)
def test_string_override_is_taken_verbatim(override, attr, expected):
    value = load_config(TINY, [override])
    for name in attr:
        value = getattr(value, name)
    assert value == expected


def test_override_inside_a_mapping_field_changes_only_that_field():
    base = load_config(TINY).model.tiny
    tiny = load_config(TINY, ["model.tiny.num_hidden_layers=1"]).model.tiny
    assert tiny == {**base, "num_hidden_layers": 1}


def test_override_without_equals_sign():
    with pytest.raises(UserError) as excinfo:
        load_config(TINY, ["train.max_steps"])
    assert "train.max_steps" in _message(excinfo) and "How to fix" in _message(excinfo)


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  files: [a.jsonl\n  seed: 1\n", encoding="utf-8")
    with pytest.raises(UserError) as excinfo:
        load_config(bad)
    assert str(bad) in _message(excinfo) and "line" in _message(excinfo)
    listing = tmp_path / "list.yaml"
    listing.write_text("- data\n- train\n", encoding="utf-8")
    with pytest.raises(UserError, match="mapping"):
        load_config(listing)


def test_empty_yaml_file_means_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set\n", encoding="utf-8")
    assert load_config(empty).to_dict() == PipelineConfig().to_dict()


def test_train_fingerprint_follows_train_keys_but_prepare_does_not():
    base = load_config(TINY)
    changed = load_config(TINY, ["train.learning_rate=0.01"])
    assert fingerprint(changed, by_name("train")) != fingerprint(base, by_name("train"))
    assert fingerprint(changed, by_name("prepare")) == fingerprint(base, by_name("prepare"))


def test_data_change_redoes_prepare_and_everything_after():
    base = load_config(TINY)
    changed = load_config(TINY, ["data.seed=7"])
    for stage in ("prepare", "train", "evaluate", "export", "report"):
        assert fingerprint(changed, by_name(stage)) != fingerprint(base, by_name(stage)), stage


def test_fingerprint_is_stable_for_the_same_config():
    assert fingerprint(load_config(TINY), by_name("train")) == fingerprint(
        load_config(TINY), by_name("train")
    )


def test_edited_data_file_content_redoes_prepare_and_everything_after(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"instruction": "问", "output": "答"}\n', encoding="utf-8")
    base = load_config(TINY, [f"data.files=[{data}]"])
    before = {stage.name: fingerprint(base, stage) for stage in STAGES}
    data.write_text('{"instruction": "问", "output": "另一个答案"}\n', encoding="utf-8")
    after = {stage.name: fingerprint(base, stage) for stage in STAGES}
    assert all(after[s] != before[s] for s in before), (before, after)
    # The same content again (a rewrite with a new mtime) is the same fingerprint.
    data.write_text('{"instruction": "问", "output": "答"}\n', encoding="utf-8")
    assert {stage.name: fingerprint(base, stage) for stage in STAGES} == before
