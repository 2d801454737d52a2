"""Report section 模型导出与部署 (`python run.py report`): GGUF export, Ollama deployment, API test.

Reads `export.json` and `deploy.json` through their types (`trainer.results.ExportResult`,
`DeployResult`); status words (已部署, 通过 ...) are made here.
"""

from __future__ import annotations

from typing import Any

from reporting import facts
from reporting.runfiles import RunFiles, known
from reporting.sections.common import nm
from reporting.text import code, fmt_bytes, fmt_float, fmt_general, is_number, shorten
from trainer.results import ApiCase, ApiTest, GgufVerification, ModelFile, measured

API_ANSWER_CHARS = 80
DEPLOY_STATUS_ZH = {"deployed": "已部署", "not_deployed": "未部署", "failed": "部署失败"}


def _export(run: RunFiles) -> dict[str, str]:
    """GGUF format, quantization, size (and its share of the F16 file), merged model and the load check."""
    ex = run.export
    gguf = ex.m(ex.result.gguf)
    out: dict[str, str] = {}
    if gguf.ok and isinstance(gguf.value, ModelFile):
        g = gguf.value
        out["format"] = "GGUF" + (f"（file_type {g.file_type}）" if g.file_type else "")
        out["quantization"] = str(g.quantization or "未记录")
        size = fmt_bytes(g.size_bytes) if is_number(g.size_bytes) else "未记录"
        f16 = ex.result.gguf_f16.size_bytes
        if is_number(f16) and is_number(g.size_bytes) and g.size_bytes:
            size += f"（F16 GGUF {fmt_bytes(f16)}，压缩为 {fmt_float(g.size_bytes / f16 * 100, 1)}%）"
        out["size"] = size
        out["gguf_path"] = str(g.path or "未记录")
    else:
        out["format"] = out["quantization"] = out["size"] = out["gguf_path"] = gguf.text()
    merged = ex.m(ex.result.merged)
    if merged.ok and isinstance(merged.value, ModelFile):
        mv = merged.value
        out["merged"] = f"{known(mv.path, None)}（{mv.dtype or 'dtype 未记录'}，" + (
            f"{fmt_bytes(mv.size_bytes)}）" if is_number(mv.size_bytes) else "大小未记录）"
        )
    else:
        out["merged"] = merged.text()
    verification = ex.m(ex.result.verification)
    if verification.ok and isinstance(verification.value, GgufVerification):
        v = verification.value
        out["verification"] = (
            f"llama.cpp 读取成功：架构 {known(v.architecture, None)}，"
            f"{fmt_general(known(v.tensor_count, None))} 个张量；"
            f"生成文本：“{shorten(' '.join(str(v.generated_text or '').split()), 120)}”"
        )
    else:
        out["verification"] = verification.text()
    out["modelfile"] = ex.m(ex.result.modelfile).text()
    return out


def _case_row(n: int, c: ApiCase) -> list[str]:
    tps = c.decode_tokens_per_s
    return [
        str(n),
        shorten(" ".join(str(c.prompt or "").split()), 60),
        shorten(" ".join(str(c.answer or "").split()), API_ANSWER_CHARS),
        str(c.done_reason or "未记录"),
        fmt_general(c.eval_count) if is_number(c.eval_count) else "未记录",
        fmt_float(tps, 1) if is_number(tps) else "未记录",
        "通过" if c.ok else "失败：" + ("；".join(map(str, c.problems)) or "未记录原因"),
    ]


def _api_test(a: ApiTest, deploy_reason: Any) -> tuple[str, str]:
    """API 测试 (status and cases passed) and whether Ollama's answer matched llama.cpp's."""
    cases = list(a.cases)
    ok = sum(1 for c in cases if c.ok)
    if a.status == "not_run":
        api_text = f"未运行：{a.reason or deploy_reason or 'deploy.json 未说明原因'}"
    else:
        api_text = f"{facts.api_test_word(known(a.status, None))}（{ok}/{len(cases)} 个用例成功，POST /api/generate）"
    compare_reason = a.llamacpp.reason if measured(a.llamacpp) else None
    matches_text = {True: "一致", False: "不一致"}.get(
        known(a.matches_llamacpp, None),
        nm(str(compare_reason or a.reason or "deploy.json 中 matches_llamacpp 为空，未说明原因")),
    )
    return api_text, matches_text


def deployment(run: RunFiles) -> dict[str, Any]:
    """The 模型导出与部署 section's slots."""
    dp = run.deploy
    r = dp.result
    status = dp.m(r.status)
    reason = known(r.reason, None)
    if status.ok:
        status_text = DEPLOY_STATUS_ZH.get(str(status.value), str(status.value))
        if status.value != "deployed":
            status_text += f"：{reason or 'deploy.json 未说明原因'}"
    else:
        status_text = status.text()
    api = dp.m(r.api_test)
    cases: list[list[str]] = []
    if api.ok and isinstance(api.value, ApiTest):
        api_text, matches_text = _api_test(api.value, reason)
        cases = [_case_row(n, c) for n, c in enumerate(api.value.cases, start=1)]
    else:
        api_text = matches_text = api.text()
    command = known(r.deploy_command, None)
    return {
        **_export(run),
        "model_name": dp.m(r.model_name).text(),
        "host": dp.m(r.host).text(),
        "status": status_text,
        "api_test": api_text,
        "matches": matches_text,
        "command": code(command) if command else None,
        "cases": cases,
    }
