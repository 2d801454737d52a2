"""Evaluation and export stages on the trained tiny model: CSV, metrics, GGUF that llama.cpp runs."""

from __future__ import annotations

import csv
import json

import pytest


@pytest.fixture(scope="module")
def evaluated(tiny_trained):
    from stages import by_name
    from trainer.pipeline import run_stage

    cfg, run_dir = tiny_trained
    run_stage(by_name("evaluate"), cfg, run_dir)
    return cfg, run_dir


@pytest.fixture(scope="module")
def exported(tiny_trained):
    from stages import by_name
    from trainer.pipeline import run_stage

    cfg, run_dir = tiny_trained
    run_stage(by_name("export"), cfg, run_dir)
    return cfg, run_dir


def test_evaluate_writes_csv_and_summary(evaluated):
    _, run_dir = evaluated
    res = json.loads((run_dir / "evaluate.json").read_text())["results"]
    test_rows = (run_dir / "data" / "test.jsonl").read_text().splitlines()
    raw = (run_dir / "evaluation_results.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: spreadsheet programs then show the Chinese
    rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    assert len(rows) == len(test_rows) == res["settings"]["samples"]
    keys = [m["key"] for m in res["metrics"]]
    assert keys[0] == "avg_answer_chars"
    assert {
        "bleu4",
        "rouge1",
        "rouge2",
        "rougeL",
        "loss",
        "perplexity",
        "distinct2",
        "hit_max_tokens_pct",
        "identity_pct",
    } <= set(keys)
    # Keys and numbers only: the report words them itself (reporting/labels.py).
    for m in res["metrics"]:
        assert m["improvement_kind"] in ("relative_pct", "points")
        assert not {"name_zh", "definition"} & set(m)
    assert res["examples"] and not any("verdict" in e for e in res["examples"])
    assert not any("measure" in q for q in res["qualitative"].values())
    assert set(res["qualitative"]) == {"accuracy", "relevance", "fluency", "professionalism"}
    loss = next(m for m in res["metrics"] if m["key"] == "loss")
    assert loss["after"] < loss["before"]  # the adapter lowered the answers' loss


def test_export_produces_a_q4_k_m_gguf_llamacpp_runs(exported):
    from gguf import GGUFReader
    from llama_cpp import Llama

    _, run_dir = exported
    res = json.loads((run_dir / "export.json").read_text())["results"]
    gguf_path = run_dir / res["gguf"]["path"]
    assert res["gguf"]["file_type"] == 15 and res["verification"]["architecture"] == "llama"
    assert gguf_path.stat().st_size == res["gguf"]["size_bytes"]
    assert (run_dir / res["gguf_f16"]["path"]).stat().st_size == res["gguf_f16"]["size_bytes"]
    assert (run_dir / "models" / "finetuned" / "model.safetensors").exists()
    assert not list((run_dir / "models").rglob("*.bin")) and not list((run_dir / "models").rglob("*.tmp"))
    reader = GGUFReader(str(gguf_path))
    assert len(reader.tensors) == res["verification"]["tensor_count"]
    llm = Llama(model_path=str(gguf_path), n_ctx=256, verbose=False)
    out = llm("[INST] 你好 [/INST]", max_tokens=4, temperature=0.0)
    llm.close()
    assert out["usage"]["completion_tokens"] >= 1
    modelfile = (run_dir / res["modelfile"]).read_text()
    assert modelfile.startswith("FROM ./model-Q4_K_M.gguf") or "FROM ./model-Q4_K_M.gguf" in modelfile


def test_generation_stops_at_max_tokens_even_on_stray_byte_tokens(exported):
    """A barely trained model emits byte-fallback tokens that never form UTF-8; llama-cpp-python's
    create_completion did not count them and ran the context full ("llama_decode returned 1")."""
    from pathlib import Path

    from trainer import gguf_generate

    _, run_dir = exported
    res = json.loads((run_dir / "export.json").read_text())["results"]
    prompt = json.loads((run_dir / "data" / "test.jsonl").read_text().splitlines()[0])["prompt"]
    for path in (res["gguf"]["path"], res["gguf_f16"]["path"]):
        out = gguf_generate.generate(Path(run_dir / path), prompt, max_tokens=24, stop=["</s>"], n_ctx=512)
        assert out["tokens"] <= 24 and out["finish_reason"] in ("stop", "length")
        assert "\ufffd" not in out["text"]


def test_evaluate_records_intervals_and_the_identity_probe(evaluated):
    _, run_dir = evaluated
    res = json.loads((run_dir / "evaluate.json").read_text())["results"]
    by_key = {m["key"]: m for m in res["metrics"]}
    rouge = by_key["rougeL"]
    assert rouge["paired_items"] == res["settings"]["samples"]
    assert rouge["change_ci95_low"] <= rouge["improvement"] <= rouge["change_ci95_high"]
    assert rouge["significance"] in ("improved", "worsened", "no_significant_change")
    assert by_key["corpus_bleu4"]["change_ci95_low"] is None and by_key["corpus_bleu4"]["interval_reason"]
    assert res["settings"]["bootstrap_resamples"] >= 1000
    probe = res["identity_probe"]
    assert probe["questions"] + probe["excluded_trained"] >= 30
    assert probe["questions"] == by_key["identity_probe_pct"]["paired_items"]
    with open(run_dir / "identity_probe_results.csv", encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))  # the tiny model's answers hold line breaks
    assert len(rows) == probe["questions"]
    assert sum(r["hit_after"] == "True" for r in rows) == probe["after_hits"]
