"""Deploy stage: `python run.py deploy` creates the Ollama model from the exported GGUF and tests it.

Reads `export.json` (completed: the GGUF path, `models/gguf/Modelfile` and the merged model whose
tokenizer proves the template), `prompt_format.json` and `data/test.jsonl` from the run folder;
writes nothing but the `deploy.json` the runner records around the returned `DeployResult`
(docs/ARTIFACTS.md). On the Ollama server it uploads the GGUF blob (only when absent) and creates
`deploy.model_name` with the Modelfile's TEMPLATE, SYSTEM and PARAMETERs.

The API test sends held-back test prompts to /api/generate (the Modelfile's TEMPLATE/SYSTEM apply)
and judges what it can prove:
- the template: the prompt token ids Ollama fed the model (the first `prompt_eval_count` entries of
  `context` in its final answer object) must equal the training prompt tokenized by the exported
  model's tokenizer, token for token, in every case;
- the stops, on the whole set: at least one answer ends by a stop; every answer at `num_predict`
  means no stop marker was reached; one long answer is the model's behaviour, listed as such;
- every request completes with a non-empty answer, and the answers are Chinese (at least one).
At temperature 0 the first answer is also compared with llama.cpp's on the same GGUF and training
prompt: information only (how many leading tokens agree), since greedy answers differ between
builds, thread counts and even a first and a warm request (../shared/ollama-api/determinism.json).

A request that fails (HTTP 500, a stream cut short, a time-out) is recorded in its case with
Ollama's error and the API test fails; an upload or creation refused by Ollama is a failed
deployment. Neither stops the pipeline. No Ollama at the host: "not_deployed" with the
`ollama create` command to run by hand. `deploy.required` turns not deployed or failed into a
UserError.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer import api_check, ollama_client, prompt_format
from trainer.config import PipelineConfig
from trainer.errors import UserError
from trainer.modelfile import ModelfileError, ModelfileSpec, read_modelfile
from trainer.prompt_format import PromptFormat
from trainer.results import (
    ApiTest,
    DeployResult,
    LoadedModel,
    NotMeasured,
    Reason,
    StopCheck,
    note,
    or_not_measured,
)
from trainer.runfolder import RunDir, read_jsonl

log = logging.getLogger(__name__)


def run(cfg: PipelineConfig, run_dir: RunDir | Path) -> DeployResult:
    """Create `deploy.model_name` on Ollama and test it; the results of deploy.json."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    gguf_path, modelfile_path, merged = _export_files(run_dir)
    fmt = prompt_format.load(run_dir.path)
    host = ollama_client.resolve_host(cfg.deploy.host)
    name = cfg.deploy.model_name
    deploy_command = (
        f"cd {shlex.quote(str(modelfile_path.parent))} && "
        f"ollama create {shlex.quote(name)} -f {shlex.quote(modelfile_path.name)}"
    )
    notes: list[str] = []
    codes: list[Reason] = []  # note_codes: each note as a code, for the report
    # Checked before anything else: the hand-run command needs a correct Modelfile too.
    spec = _checked_modelfile(modelfile_path, gguf_path, fmt)
    base = {"host": host, "model_name": name, "deploy_command": deploy_command}

    try:
        version = ollama_client.check_server(host, timeout_s=min(cfg.deploy.timeout_s, 10.0))
    except ollama_client.OllamaUnavailable as exc:
        reason = f"no Ollama at {host}"
        _raise_if_required(cfg, reason, deploy_command, exc)
        note(notes, codes, "deploy_by_hand", f"{reason}: deploy by hand with `{deploy_command}`", host=host)
        return DeployResult(
            status="not_deployed",
            **base,
            reason=reason,
            reason_code=Reason(code="no_ollama", params={"host": host}),
            api_test=_not_run(reason),
            headline=f"not deployed: {reason}; run `{deploy_command}`",
            notes=notes,
            note_codes=codes,
        )

    try:
        digest = _create(
            cfg, host, name, gguf_path, spec, lambda msg: note(notes, codes, "text", msg, text=msg)
        )
    except ollama_client.OllamaError as exc:
        reason = str(exc).split("\n")[0]
        _raise_if_required(cfg, reason, deploy_command, exc)
        note(notes, codes, "deploy_failed", f"deployment failed: {reason}", error=reason)
        return DeployResult(
            status="failed",
            **base,
            reason=reason,
            reason_code=Reason(code="ollama_error", params={"error": reason}),
            ollama_version=version,
            api_test=_not_run("deployment failed"),
            headline=f"deployment FAILED: {reason}",
            notes=notes,
            note_codes=codes,
        )
    note(
        notes,
        codes,
        "created",
        f"created model '{name}' on Ollama {version} at {host} from {modelfile_path.name}",
        name=name,
        version=version,
        host=host,
    )

    num_ctx = int(spec.parameters.get("num_ctx", cfg.export.num_ctx))
    records, why_not = _test_records(run_dir, cfg.deploy.test_prompts)
    if why_not:
        note(notes, codes, "api_test_not_run", f"API test not run: {why_not}", text=why_not)
        api_test = _not_run(why_not)
    else:
        tokenizer = _tokenizer(run_dir, merged)
        api_test = api_check.run(cfg, fmt, host, name, gguf_path, num_ctx, records, tokenizer, notes)
        # api_check's notes (a failed request, a comparison not made) are quoted as written.
        codes += [Reason(code="text", params={"text": n}) for n in notes[len(codes) :]]
    loaded = _loaded_model(host, name)

    return DeployResult(
        status="deployed",
        **base,
        reason=NotMeasured(),  # null: deployed
        ollama_version=version,
        blob=digest,
        modelfile=_relative(modelfile_path, run_dir),
        parameters=spec.parameters,
        api_test=api_test,
        loaded=loaded,
        # Written also when the size is known (null), as deploy.json always had it.
        loaded_reason=loaded.why if isinstance(loaded, NotMeasured) else NotMeasured(),
        headline=f"deployed '{name}' to {host}; {_verdict(api_test)}",
        notes=notes,
        note_codes=codes,
    )


def _raise_if_required(cfg: PipelineConfig, reason: str, deploy_command: str, exc: Exception) -> None:
    if cfg.deploy.required:
        raise UserError(
            f"{reason}, and deploy.required is set.",
            fix=f"start Ollama (`ollama serve`) or set deploy.host / OLLAMA_HOST; "
            f"or deploy by hand: {deploy_command}",
        ) from exc


def _create(
    cfg: PipelineConfig,
    host: str,
    name: str,
    gguf_path: Path,
    spec: ModelfileSpec,
    log_note: Callable[[str], None],
) -> str:
    """Upload the GGUF (when absent) and create the model; the blob digest. OllamaError on failure."""
    digest = ollama_client.ensure_blob(host, gguf_path, timeout_s=cfg.deploy.timeout_s, log=log_note)
    ollama_client.create_model(
        host,
        name,
        digest,
        gguf_path.name,
        spec.template,
        spec.system,
        spec.parameters,
        timeout_s=cfg.deploy.timeout_s,
        log=log.info,
    )
    return digest


def _not_run(reason: str) -> ApiTest:
    return ApiTest(status="not_run", reason=reason, cases=[], matches_llamacpp=NotMeasured(reason))


def _verdict(api_test: ApiTest) -> str:
    """The API test in one line for the terminal (the report words it in Chinese)."""
    if api_test.status == "not_run":
        return f"API test not run ({api_test.reason})"
    word = {"passed": "passed", "inconclusive": "inconclusive"}.get(str(api_test.status), "FAILED")
    parts = []
    t = api_test.template
    if t.status == "verified":
        parts.append(f"template verified, {t.matching_tokens}/{t.expected_tokens} prompt tokens")
    elif t.status == "failed":
        parts.append(f"template MISMATCH in case {t.case}")
    else:
        parts.append(f"template not checked ({t.reason})")
    stops = api_test.stops
    if isinstance(stops, StopCheck) and stops.status != "not_checked":
        parts.append(f"{stops.stopped}/{len(api_test.cases)} answers ended by a stop")
    failures = [f for f in api_test.failures if f != "template_mismatch"]
    if failures:
        parts.append("failures: " + ", ".join(failures))
    return f"API test {word} ({'; '.join(parts)})"


def _relative(path: Path, run_dir: RunDir) -> str:
    try:
        return str(path.relative_to(run_dir.path))
    except ValueError:
        return str(path)


def _export_files(run_dir: RunDir) -> tuple[Path, Path, str | None]:
    """The exported GGUF and Modelfile (checked to exist) and the merged model folder export.json
    names (relative; None when it names none)."""
    export = run_dir.completed("export")
    if export is None:
        raise UserError(
            f"{run_dir.stage_file('export')} is missing or not completed: there is no GGUF to deploy.",
            fix="run `python run.py export` first",
        )
    results = export.get("results", {})
    try:
        gguf_path = run_dir / results["gguf"]["path"]
        modelfile_path = run_dir / results["modelfile"]
    except (KeyError, TypeError):
        raise UserError(
            f"{run_dir.stage_file('export')} has no gguf.path or modelfile in its results.",
            fix="rerun `python run.py export --force`",
        ) from None
    for path in (gguf_path, modelfile_path):
        if not path.is_file():
            raise UserError(
                f"{path} (listed in export.json) does not exist.", fix="rerun `python run.py export --force`"
            )
    return gguf_path, modelfile_path, (results.get("merged") or {}).get("path")


def _checked_modelfile(modelfile_path: Path, gguf_path: Path, fmt: PromptFormat) -> ModelfileSpec:
    """The Modelfile's create parameters, refused when they drift from the training format."""
    try:
        spec = read_modelfile(modelfile_path)
    except ModelfileError as exc:
        raise UserError(f"{modelfile_path}: {exc}", fix="rerun `python run.py export --force`") from None
    problems = []
    if spec.gguf_path != gguf_path.resolve():
        problems.append(f"FROM {spec.source} is not the exported GGUF {gguf_path.name}")
    if spec.template != fmt.ollama_template:
        problems.append("TEMPLATE differs from prompt_format.json's ollama_template")
    if spec.system != fmt.system:
        problems.append("SYSTEM differs from prompt_format.json's system prompt")
    missing = [m for m in fmt.stop if m not in spec.parameters.get("stop", [])]
    if missing:
        problems.append(f"PARAMETER stop lacks {', '.join(missing)}")
    if problems:
        raise UserError(
            f"{modelfile_path} does not match the run's prompt format: {'; '.join(problems)}.",
            fix="rerun `python run.py export --force` to rewrite it (other PARAMETERs may be edited freely)",
        )
    return spec


def _test_records(run_dir: RunDir, count: int) -> tuple[list[dict[str, Any]], str | None]:
    path = run_dir / "data/test.jsonl"
    if count <= 0:
        return [], "deploy.test_prompts is 0"
    if not path.is_file():
        return [], f"{path} does not exist (run `python run.py prepare`)"
    records = [r for r in read_jsonl(path) if str(r.get("instruction", "")).strip()][:count]
    if not records:
        return [], f"{path} has no test records"
    return records, None


def _tokenizer(run_dir: RunDir, merged: str | None) -> Any:
    """The exported model's tokenizer (models/finetuned/, export.json merged.path), or the reason
    (a str) it cannot be loaded."""
    if not merged or not (run_dir / merged).is_dir():
        return "export.json names no merged model folder with a tokenizer"
    from trainer.models import load_tokenizer

    try:
        return load_tokenizer(str(run_dir / merged))
    except (UserError, OSError, ValueError) as exc:
        return f"the tokenizer of {merged} could not be loaded: {str(exc).splitlines()[0]}"


def _loaded_model(host: str, name: str) -> LoadedModel | NotMeasured:
    """Size in memory of the model just used (GET /api/ps), for the report; or why not known."""
    try:
        models = ollama_client.ps(host)
    except ollama_client.OllamaError as exc:
        return NotMeasured(f"GET /api/ps failed: {exc}")
    for m in models:
        if any(ollama_client.same_model(m.get(key) or "", name) for key in ("name", "model")):
            return LoadedModel(
                size_bytes=or_not_measured(m.get("size")),
                size_vram_bytes=or_not_measured(m.get("size_vram")),
                context_length=or_not_measured(m.get("context_length")),
                quantization=or_not_measured((m.get("details") or {}).get("quantization_level")),
            )
    return NotMeasured(f"'{name}' was not loaded (not listed by GET /api/ps) after the API test")
