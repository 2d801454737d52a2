"""Deploy stage: `python run.py deploy` creates the Ollama model from the exported GGUF and tests it.

Reads `export.json` (completed: the GGUF path and `models/gguf/Modelfile`), `prompt_format.json`
and `data/test.jsonl` from the run folder; writes nothing but the `deploy.json` the runner records
around the returned `DeployResult` (docs/ARTIFACTS.md). On the Ollama server it uploads the GGUF blob
(only when absent) and creates `deploy.model_name` with the Modelfile's TEMPLATE, SYSTEM and
PARAMETERs.

The API test sends held-back test prompts (instruction + input, the Modelfile's TEMPLATE/SYSTEM
apply) to /api/generate; each must give a non-empty answer with Chinese characters that ended on a
stop (done_reason "stop"). At temperature 0 the first answer is compared with llama.cpp run
in-process on the same GGUF with the training prompt text (`PromptFormat.prompt`), greedy: a
difference means Ollama is not asking the model in the format it was trained on.

No Ollama at the host: results say "not_deployed" with the `ollama create` command to run by hand,
and the pipeline goes on, unless `deploy.required` (then a UserError).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from pathlib import Path
from typing import Any

from trainer import gguf_generate, ollama_client, prompt_format
from trainer.config import PipelineConfig
from trainer.errors import UserError
from trainer.modelfile import ModelfileError, read_modelfile
from trainer.prompt_format import PromptFormat
from trainer.results import (
    ApiCase,
    ApiTest,
    DeployResult,
    LlamacppComparison,
    LoadedModel,
    NotMeasured,
    or_not_measured,
)
from trainer.runfolder import RunDir, read_jsonl

log = logging.getLogger(__name__)

# CJK Unified Ideographs and Extension A: "the answer is Chinese".
_CHINESE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def run(cfg: PipelineConfig, run_dir: RunDir | Path) -> DeployResult:
    """Create `deploy.model_name` on Ollama and test it; the results of deploy.json."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    gguf_path, modelfile_path = _export_files(run_dir)
    fmt = prompt_format.load(run_dir.path)
    host = ollama_client.resolve_host(cfg.deploy.host)
    name = cfg.deploy.model_name
    deploy_command = (
        f"cd {shlex.quote(str(modelfile_path.parent))} && "
        f"ollama create {shlex.quote(name)} -f {shlex.quote(modelfile_path.name)}"
    )
    notes: list[str] = []
    # Checked before anything else: the hand-run command needs a correct Modelfile too.
    spec = _checked_modelfile(modelfile_path, gguf_path, fmt)

    try:
        version = ollama_client.check_server(host, timeout_s=min(cfg.deploy.timeout_s, 10.0))
    except ollama_client.OllamaUnavailable as exc:
        if cfg.deploy.required:
            raise UserError(
                f"no Ollama at {host}, and deploy.required is set.",
                fix=f"start Ollama (`ollama serve`) or set deploy.host / OLLAMA_HOST; "
                f"or deploy by hand: {deploy_command}",
            ) from exc
        reason = f"no Ollama at {host}"
        notes.append(f"{reason}: deploy by hand with `{deploy_command}`")
        return DeployResult(
            status="not_deployed",
            host=host,
            model_name=name,
            reason=reason,
            deploy_command=deploy_command,
            api_test=_not_run(reason),
            headline=f"not deployed: {reason}; run `{deploy_command}`",
            notes=notes,
        )

    digest = ollama_client.ensure_blob(host, gguf_path, timeout_s=cfg.deploy.timeout_s, log=notes.append)
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
    notes.append(f"created model '{name}' on Ollama {version} at {host} from {modelfile_path.name}")

    num_ctx = int(spec.parameters.get("num_ctx", cfg.export.num_ctx))
    api_test = _api_test(cfg, run_dir, fmt, host, name, gguf_path, num_ctx, notes)
    loaded = _loaded_model(host, name)

    return DeployResult(
        status="deployed",
        host=host,
        model_name=name,
        reason=NotMeasured(),  # null: deployed
        deploy_command=deploy_command,
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
    )


def _not_run(reason: str) -> ApiTest:
    return ApiTest(status="not_run", reason=reason, cases=[], matches_llamacpp=NotMeasured(reason))


def _verdict(api_test: ApiTest) -> str:
    if api_test.status == "not_run":
        return f"API test not run ({api_test.reason})"
    cases = list(api_test.cases)
    ok_cases = sum(1 for c in cases if c.ok)
    matches = api_test.matches_llamacpp
    same = (
        ""
        if isinstance(matches, NotMeasured)
        else {True: ", same answer as llama.cpp", False: ", DIFFERENT answer from llama.cpp"}[matches]
    )
    word = "passed" if api_test.status == "passed" else "FAILED"
    return f"API test {word} ({ok_cases}/{len(cases)} answers ok{same})"


def _relative(path: Path, run_dir: RunDir) -> str:
    try:
        return str(path.relative_to(run_dir.path))
    except ValueError:
        return str(path)


def _export_files(run_dir: RunDir) -> tuple[Path, Path]:
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
    return gguf_path, modelfile_path


def _checked_modelfile(modelfile_path: Path, gguf_path: Path, fmt: PromptFormat) -> Any:
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


def _check_answer(answer: str, done_reason: str | None) -> list[str]:
    problems = []
    if not answer.strip():
        problems.append("empty answer")
    elif not _CHINESE.search(answer):
        problems.append("no Chinese characters in the answer")
    if done_reason != "stop":
        problems.append(f"done_reason is {done_reason!r}, not 'stop' (no end marker within num_predict)")
    return problems


def _api_test(
    cfg: PipelineConfig,
    run_dir: RunDir,
    fmt: PromptFormat,
    host: str,
    name: str,
    gguf_path: Path,
    num_ctx: int,
    notes: list[str],
) -> ApiTest:
    records, reason = _test_records(run_dir, cfg.deploy.test_prompts)
    if reason:
        notes.append(f"API test not run: {reason}")
        return _not_run(reason)
    # Plain greedy decoding at temperature 0 on both sides: Ollama may otherwise apply its default
    # repeat penalty, which llama.cpp's completion call does not, and the comparison would mean nothing.
    options = {
        "temperature": cfg.deploy.temperature,
        "num_predict": cfg.deploy.num_predict,
        "num_ctx": num_ctx,
        "repeat_penalty": 1.0,
    }
    cases = []
    for record in records:
        user = fmt.user_text(record["instruction"], record.get("input", ""))
        gen = ollama_client.generate(host, name, user, options, timeout_s=cfg.deploy.timeout_s)
        problems = _check_answer(gen.text, gen.done_reason)
        cases.append(
            ApiCase(
                id=record.get("id"),
                prompt=user,
                answer=gen.text,
                done_reason=or_not_measured(gen.done_reason),
                eval_count=or_not_measured(gen.eval_count),
                decode_tokens_per_s=or_not_measured(gen.decode_tokens_per_s),
                ttft_ms=NotMeasured() if gen.ttft_s is None else round(gen.ttft_s * 1000, 1),
                ok=not problems,
                problems=problems,
            )
        )

    comparison = _compare_with_llamacpp(cfg, fmt, gguf_path, records[0], str(cases[0].answer), num_ctx)
    if comparison.matches_llamacpp is False:
        notes.append(
            "Ollama's first answer differs from llama.cpp's on the same GGUF and prompt: check the "
            "Modelfile TEMPLATE/stop parameters (see api_test.llamacpp for both texts)"
        )
    elif isinstance(comparison.matches_llamacpp, NotMeasured):
        notes.append(f"llama.cpp comparison not made: {comparison.reason}")
    passed = all(c.ok for c in cases) and comparison.matches_llamacpp is not False
    return ApiTest(
        status="passed" if passed else "failed",
        options=options,
        cases=cases,
        matches_llamacpp=comparison.matches_llamacpp,
        llamacpp=comparison,
    )


def _compare_with_llamacpp(
    cfg: PipelineConfig,
    fmt: PromptFormat,
    gguf_path: Path,
    record: dict[str, Any],
    ollama_answer: str,
    num_ctx: int,
) -> LlamacppComparison:
    prompt_text = fmt.prompt(record["instruction"], record.get("input", ""))

    def not_compared(reason: str) -> LlamacppComparison:
        # Both nulls say why in `reason` (read back as their NotMeasured.why).
        return LlamacppComparison(
            prompt=prompt_text,
            ollama_answer=ollama_answer,
            llamacpp_answer=NotMeasured(reason),
            matches_llamacpp=NotMeasured(reason),
            reason=reason,
        )

    if cfg.deploy.temperature != 0:
        return not_compared(
            f"deploy.temperature is {cfg.deploy.temperature}: sampled answers are not comparable"
        )
    # Ollama and llama.cpp both add BOS themselves when the GGUF asks for it, so the plain prompt
    # text is the same input on both sides. In a child process: a llama.cpp crash on this CPU is
    # a recorded reason, not the end of the stage.
    threads = max(1, min(4, (os.cpu_count() or 2) // 2))
    try:
        out = gguf_generate.generate(
            gguf_path,
            prompt_text,
            max_tokens=cfg.deploy.num_predict,
            stop=fmt.stop,
            n_ctx=num_ctx,
            threads=threads,
            timeout_s=cfg.deploy.timeout_s,
        )
    except gguf_generate.GGUFRunError as exc:
        return not_compared(str(exc).split("\n")[0])
    answer = out["text"]
    return LlamacppComparison(
        prompt=prompt_text,
        ollama_answer=ollama_answer,
        llamacpp_answer=answer,
        llamacpp_finish_reason=or_not_measured(out["finish_reason"]),
        matches_llamacpp=answer.strip() == ollama_answer.strip(),
        reason=NotMeasured(),  # null: compared
    )


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
