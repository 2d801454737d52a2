"""`train.backend=auto` on a CPU: the backend probe picks the faster backend, says why in train.json,
and its cache gives the same choice without probing again (tiny model, for real)."""

from __future__ import annotations

import json
import subprocess

from tests.test_train import _train_on_prepared_copy
from trainer.results import BackendChoice, BackendProbe, ProbeRun, TrainResult


def _train_auto(trained, tmp_path, cache):
    run_dir, cmd = _train_on_prepared_copy(
        trained,
        tmp_path,
        "train.backend=auto",
        "train.max_steps=4",
        "train.eval_steps=4",
        "train.save_steps=4",
    )
    env = {**__import__("os").environ, "FT_BACKEND_PROBE_CACHE": str(cache)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "train.json").read_text())["results"]


def test_auto_takes_the_backend_the_probe_measured_faster_and_caches_it(tiny_trained, tmp_path):
    _, trained = tiny_trained
    cache = tmp_path / "probe-cache"
    (tmp_path / "first").mkdir()
    res = _train_auto(trained, tmp_path / "first", cache)
    choice = res["backend_choice"]
    assert res["backend"] == choice["backend"]
    probe = choice["probe"]
    speeds = {r["backend"]: r["tokens_per_s"] for r in probe["runs"]}
    assert set(speeds) == {"unsloth", "peft"} and probe["cached"] is False and probe["cost_s"] > 0
    if choice["reason"] == "probe_faster":  # both ran: never the one measured slower
        assert speeds[choice["backend"]] == max(speeds.values())
        assert len(list(cache.glob("*.json"))) == 1  # cached only when both ran
    else:  # one failed (e.g. Unsloth on this model): the one that ran, with the failure recorded
        assert choice["reason"] == "probe_other_failed" and speeds[choice["backend"]]
        assert any(r.get("error") for r in probe["runs"])
    assert TrainResult.from_dict(res).to_dict() == res
    util = res["utilisation"]
    assert util["peak_dtype"] == res["precision"] and util["utilisation"] > 0
    assert util["achieved_flops_per_s"] == round(
        util["model_flops_per_token"] * res["resources"]["tokens_per_s"]
    )

    if choice["reason"] == "probe_faster":
        (tmp_path / "second").mkdir()
        again = _train_auto(trained, tmp_path / "second", cache)["backend_choice"]
        assert again["backend"] == choice["backend"] and again["probe"]["cached"] is True
        assert again["probe"]["cost_s"] == 0 and again["probe"]["runs"] == probe["runs"]


def test_explicit_backend_never_probes(tiny_trained):
    _, run_dir = tiny_trained  # configs/tiny.yaml sets train.backend=peft
    res = json.loads((run_dir / "train.json").read_text())["results"]
    assert res["backend_choice"]["reason"] == "config" and res["backend_choice"]["probe"] is None


def test_report_words_the_choice_in_chinese():
    from reporting.sections.training import backend_choice_text

    runs = [ProbeRun(backend="unsloth", tokens_per_s=270.0), ProbeRun(backend="peft", tokens_per_s=314.4)]
    probe = BackendProbe(steps=3, cached=False, cost_s=61.0, runs=runs)
    text = backend_choice_text(BackendChoice(backend="peft", reason="probe_faster", probe=probe))
    assert "更快" in text and "unsloth 270.0" in text and "peft 314.4" in text and "61 秒" in text
    cached = BackendProbe(steps=3, cached=True, cost_s=0.0, runs=runs)
    assert "缓存" in backend_choice_text(BackendChoice(backend="peft", reason="probe_faster", probe=cached))


def test_the_probe_cache_key_changes_with_the_training_code(tiny_cfg, tmp_path, monkeypatch):
    """A cached choice never outlives the code it measured: editing a file that makes the training
    step (here a stand-in for trainer/speedups.py) gives a new key, so the next run probes again."""
    from trainer import backend_probe

    assert all(p.is_file() for p in backend_probe.TRAINING_CODE)  # the real files, each hashed
    code = tmp_path / "speedups.py"
    code.write_text("# one version\n")
    monkeypatch.setattr(backend_probe, "TRAINING_CODE", (code,))
    key, fields = backend_probe.probe_key(tiny_cfg)
    assert backend_probe.probe_key(tiny_cfg)[0] == key  # the same code, the same key
    code.write_text("# another version\n")
    new_key, new_fields = backend_probe.probe_key(tiny_cfg)
    assert new_key != key and new_fields["training_code_sha1"] != fields["training_code_sha1"]
