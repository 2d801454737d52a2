"""The training stage on the tiny model, for real on CPU: loss, LoRA deltas, frozen base, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent


def test_train_json_has_every_field(tiny_trained):
    _, run_dir = tiny_trained
    record = json.loads((run_dir / "train.json").read_text())
    assert record["status"] == "completed"
    res = record["results"]
    for key in (
        "backend",
        "backend_reason",
        "precision",
        "precision_reason",
        "device",
        "lora",
        "hyperparameters",
        "checkpoints",
        "best_checkpoint",
        "resources",
        "files",
    ):
        assert res[key] is not None, key
    for key in ("wall_time_s", "trained_tokens", "tokens_per_s", "peak_rss_bytes", "cpu_model", "disk_bytes"):
        assert res["resources"][key], key
    assert res["resources"]["peak_gpu_reserved_bytes"] is None and res["resources"]["gpu_reason"]
    assert res["global_step"] == 12
    assert res["hyperparameters"]["effective_batch_size"] == 4
    assert [c["step"] for c in res["checkpoints"]] == [6, 12]
    assert res["best_checkpoint"]["step"] in (6, 12)


def test_loss_falls_and_logs_are_written(tiny_trained):
    _, run_dir = tiny_trained
    rows = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 12 and all(v == v for v in losses)  # every step logged, finite
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert any("eval_loss" in r for r in rows)
    assert list((run_dir / "runs").rglob("events.out.tfevents.*")), "TensorBoard event files"
    assert "backend=peft" in (run_dir / "logs" / "training.log").read_text()


def test_lora_weights_changed_and_base_frozen(tiny_trained):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, run_dir = tiny_trained
    adapter = run_dir / "adapter"
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero
    base_ref = (adapter / "base_model.txt").read_text().strip()
    base = AutoModelForCausalLM.from_pretrained(base_ref)
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = PeftModel.from_pretrained(base, str(adapter))
    for name, param in model.named_parameters():
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(param, original[key]), name
    tok_ids = torch.tensor([[1, 5, 6, 7]])
    out = model.generate(tok_ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > 4


def test_prompt_format_saved_beside_adapter(tiny_trained):
    _, run_dir = tiny_trained
    saved = json.loads((run_dir / "adapter" / "prompt_format.json").read_text())
    assert saved == json.loads((run_dir / "prompt_format.json").read_text())


def _checkpoint_done(path: Path) -> bool:
    return all((path / n).exists() for n in ("trainer_state.json", "optimizer.pt", "scheduler.pt"))


@pytest.mark.slow
def _train_on_prepared_copy(trained: Path, tmp_path: Path, *overrides: str) -> tuple[Path, list[str]]:
    """(run folder holding a copy of the prepared splits, the `run.py train` command on it)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("data", "prompt_format.json"):  # reuse the prepared splits
        os.system(f"cp -r '{trained / name}' '{run_dir / name}'")
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "train",
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--run-dir",
        str(run_dir),
        *overrides,
    ]
    return run_dir, cmd


def test_killed_training_resumes_to_the_same_step_count(tiny_trained, tmp_path):
    _, trained = tiny_trained
    run_dir, cmd = _train_on_prepared_copy(
        trained, tmp_path, "train.max_steps=24", "train.save_steps=4", "train.eval_steps=4"
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if _checkpoint_done(run_dir / "checkpoints" / "checkpoint-8"):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert (
        not (run_dir / "train.json").exists()
        or json.loads((run_dir / "train.json").read_text())["status"] != "completed"
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((run_dir / "train.json").read_text())["results"]
    assert res["global_step"] == 24
    assert res["resumed_from"].startswith("checkpoints/checkpoint-")
    steps = [
        json.loads(line)["step"]
        for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert steps == sorted(set(steps)) and steps[-1] == 24  # no duplicated or lost log lines


def test_cpu_precision_is_bf16_autocast_only_where_the_cpu_has_bf16_units(monkeypatch):
    import torch

    from trainer.backends import choose_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    precision, why, code = choose_precision("auto", ["amx_bf16", "avx512_bf16"])
    assert precision == "bf16" and "amx_bf16" in why and "autocast" in why
    assert code.code == "cpu_bf16_autocast" and code.params["units"] == ["amx_bf16", "avx512_bf16"]
    precision, why, code = choose_precision("auto", [])
    assert precision == "fp32" and "no bf16 unit" in why and code.code == "cpu_no_bf16"
    assert choose_precision("bf16", [])[0] == "fp32"
    precision, why, code = choose_precision("fp32", ["amx_bf16"])
    assert (precision, why, code.code) == ("fp32", "train.precision=fp32", "as_configured")
    assert choose_precision("fp16", ["amx_bf16"])[2].code == "fp16_needs_cuda"


def test_train_json_records_the_precision_chosen_for_this_cpu(tiny_trained):
    from trainer.runfolder import cpu_bf16_units

    _, run_dir = tiny_trained
    res = json.loads((run_dir / "train.json").read_text())["results"]
    expected = "bf16" if cpu_bf16_units() else "fp32"
    assert res["precision"] == expected and res["precision_reason"].startswith("auto")
    assert res["precision_code"]["code"] == ("cpu_bf16_autocast" if expected == "bf16" else "cpu_no_bf16")


def test_time_budget_stops_training_and_says_where(tiny_trained, tmp_path):
    _, trained = tiny_trained
    # 0.001 min = 60 ms: used up by the first optimizer step
    run_dir, cmd = _train_on_prepared_copy(
        trained, tmp_path, "train.max_steps=500", "train.max_minutes=0.001"
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((run_dir / "train.json").read_text())["results"]
    assert res["global_step"] == 1
    assert res["time_budget"] == {
        "max_minutes": 0.001,
        "stopped_early": True,
        "stopped_at_step": 1,
        "planned_steps": 500,
    }
    assert any("train.max_minutes=0.001" in n and "step 1 of 500" in n for n in res["notes"])
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert [c["step"] for c in res["checkpoints"]] == [1]  # the stopping step is a resume point


def test_an_empty_val_split_is_a_clear_error_not_a_traceback(tiny_trained, tmp_path):
    _, trained = tiny_trained
    run_dir, cmd = _train_on_prepared_copy(trained, tmp_path)
    (run_dir / "data" / "val.jsonl").write_text("", encoding="utf-8")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    out = done.stdout + done.stderr
    assert "val.jsonl has no records: nothing to validate on" in out and "data.val_size" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("on", [False, True])
def test_gradient_checkpointing_is_what_the_config_says(tiny_cfg, tmp_path, on):
    """TRL's SFTConfig turns gradient checkpointing on by default (every forward recomputed in the
    backward, about a third more compute); the stage passes train.gradient_checkpointing through."""
    from dataclasses import replace

    from trainer.runfolder import RunDir
    from trainer.train import _sft_config

    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, gradient_checkpointing=on))
    assert _sft_config(cfg, RunDir(tmp_path), "fp32").gradient_checkpointing is on
