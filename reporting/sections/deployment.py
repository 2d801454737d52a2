"""Report section 模型导出与部署 (`python run.py report`): GGUF export, Ollama deployment, API test.

Reads `export.json` and `deploy.json` through their types (`trainer.results.ExportResult`,
`DeployResult`); status words (已部署, 通过 ...) are made here.
"""

from __future__ import annotations

import json
from typing import Any

from reporting import facts, wording
from reporting.runfiles import RunFiles
from reporting.text import code, fmt_bytes, fmt_float, fmt_general, is_number, shorten, shown, verbatim
from trainer.metrics import percentile
from trainer.results import ApiCase, ApiTest, GgufVerification, ModelFile, NotMeasured, known, measured

API_ANSWER_CHARS = 80
DEPLOY_STATUS_ZH = {"deployed": "已部署", "not_deployed": "未部署", "failed": "部署失败"}


def _export(run: RunFiles) -> dict[str, str]:
    """GGUF format, quantization, size (and its share of the F16 file), merged model and the load check."""
    ex = run.export
    g = ex.value(ex.result.gguf)
    out: dict[str, str] = {}
    if isinstance(g, ModelFile):
        out["format"] = "GGUF" + (f"（file_type {g.file_type}）" if g.file_type else "")
        out["quantization"] = str(g.quantization or "未记录")
        size = fmt_bytes(g.size_bytes) if is_number(g.size_bytes) else "未记录"
        f16 = ex.result.gguf_f16.size_bytes
        if is_number(f16) and is_number(g.size_bytes) and g.size_bytes:
            size += f"（F16 GGUF {fmt_bytes(f16)}，压缩为 {fmt_float(g.size_bytes / f16 * 100, 1)}%）"
        out["size"] = size
        out["gguf_path"] = str(g.path or "未记录")
    else:
        out["format"] = out["quantization"] = out["size"] = out["gguf_path"] = shown(g)
    merged = ex.value(ex.result.merged)
    if isinstance(merged, ModelFile):
        out["merged"] = f"{known(merged.path, None)}（{merged.dtype or 'dtype 未记录'}，" + (
            f"{fmt_bytes(merged.size_bytes)}）" if is_number(merged.size_bytes) else "大小未记录）"
        )
    else:
        out["merged"] = shown(merged)
    v = ex.value(ex.result.verification)
    if isinstance(v, GgufVerification):
        out["verification"] = (
            f"llama.cpp 读取成功：架构 {known(v.architecture, None)}，"
            f"{fmt_general(known(v.tensor_count, None))} 个张量；"
            f"生成文本：{verbatim(shorten(' '.join(str(v.generated_text or '').split()), 120)) or '（空）'}"
        )
    else:
        out["verification"] = shown(v)
    out["modelfile"] = shown(ex.value(ex.result.modelfile))
    return out


# Codes of deploy.json (trainer/api_check.py) in Chinese.
PROBLEM_ZH = {"request_failed": "请求失败", "empty_answer": "空回答"}
OBSERVATION_ZH = {"at_limit": "达到 num_predict 上限（模型行为）", "no_chinese": "回答不含中文（模型行为）"}
FAILURE_ZH = {
    "template_mismatch": "Ollama 实际使用的提示 token 与训练格式不同",
    "request_failed": "有请求失败",
    "empty_answer": "有空回答",
    "no_stop": "没有任何回答以停止标记结束（所有回答都达到 num_predict 上限）",
    "no_chinese": "没有任何回答含中文",
}
REASON_ZH = {
    "no_context": "Ollama 的回答没有 context 字段（无法取得提示 token）",
    "request_failed": "请求失败",
    "no_cases": "没有测试用例",
}
INTERPRETATION_ZH = {
    "identical": "回答完全相同",
    "numeric_divergence": "提示 token 已证明相同，回答在之后分叉：这是数值差异（不同构建、线程数与预热下浮点运算顺序不同），不说明模板有误",
    "prompt_differs": "提示 token 不同：Ollama 没有按训练格式提问",
    "unknown": "未能证明提示 token 相同，无法判断分叉原因",
}


def _quoted(text: Any) -> str:
    """Model or tokenizer text in quotes, newlines shown as \\n so a difference in them is visible."""
    return "“" + json.dumps(str(text or ""), ensure_ascii=False)[1:-1] + "”"


def _reason_zh(reason: Any) -> str:
    text = str(reason or "")
    code, _, detail = text.partition(": ")
    if code == "no_tokenizer":
        return f"无法加载导出模型的分词器（{detail}）"
    return REASON_ZH.get(text) or wording.text(text) or "deploy.json 未说明原因"


def _case_row(n: int, c: ApiCase) -> list[str]:
    tps = c.decode_tokens_per_s
    pt = c.prompt_tokens
    if pt.status == "verified":
        tokens = f"一致 {fmt_general(pt.matching_tokens)}/{fmt_general(pt.expected_tokens)}"
    elif pt.status == "failed":
        tokens = f"第 {fmt_general(pt.first_difference)} 个起不同"
    else:
        tokens = "未检查：" + _reason_zh(pt.reason)
    if c.ok:
        result = "完成"
    else:
        result = "失败：" + ("；".join(PROBLEM_ZH.get(str(p), str(p)) for p in c.problems) or "未记录原因")
        if c.error:
            result += f"（{verbatim(shorten(str(c.error), 120))}）"
    notes = [OBSERVATION_ZH.get(str(o), str(o)) for o in c.observations]
    return [
        str(n),
        shorten(" ".join(str(c.prompt or "").split()), 60),
        # The model's own words, quoted as written like the examples' answers (a code span).
        verbatim(shorten(" ".join(str(c.answer or "").split()), API_ANSWER_CHARS)) or "（空）",
        str(c.done_reason or "未记录"),
        fmt_general(c.eval_count) if is_number(c.eval_count) else "未记录",
        fmt_float(tps, 1) if is_number(tps) else "未记录",
        tokens,
        "；".join([result, *notes]),
    ]


def _template_text(a: ApiTest) -> str:
    t = a.template
    if not measured(t):
        return shown(NotMeasured("deploy.json 没有模板验证结果（旧版运行目录）"))
    if t.status == "verified":
        return (
            f"已验证：Ollama 实际使用的提示 token（回答中 context 的前 prompt_eval_count 个）与训练格式的提示"
            f"经导出模型分词器得到的 token 逐一相同，{fmt_general(t.cases_checked)} 个请求共 "
            f"{fmt_general(t.matching_tokens)}/{fmt_general(t.expected_tokens)} 个 token"
        )
    if t.status == "failed":
        case = list(a.cases)[int(t.case) - 1] if is_number(t.case) else None
        pt = case.prompt_tokens if case is not None else None
        where = ""
        if pt is not None and measured(pt):
            where = (
                f"：第 {fmt_general(t.case)} 个请求的第 {fmt_general(pt.first_difference)} 个 token 起不同"
                f"（训练格式 {fmt_general(pt.expected_tokens)} 个，Ollama {fmt_general(pt.ollama_tokens)} 个）；"
                f"训练格式此处为 {_quoted(pt.expected_around)}，Ollama 为 {_quoted(pt.ollama_around)}"
            )
        return "未通过" + where
    return "未检查：" + _reason_zh(t.reason)


def _stops_text(a: ApiTest) -> str:
    st = a.stops
    if not measured(st) or st.status == "not_checked":
        return shown(NotMeasured("没有完成的回答"))
    total = len(list(a.cases))
    text = f"{fmt_general(st.stopped)}/{total} 个回答以停止标记结束"
    if st.status == "failed":
        return f"未通过：{text}，所有完成的回答都达到 num_predict 上限（停止标记没有生效）"
    if is_number(st.at_limit) and st.at_limit:
        text += f"；{fmt_general(st.at_limit)} 个回答达到 num_predict 上限，属于模型行为，不视为部署故障"
    return "通过：" + text


def _llamacpp_text(a: ApiTest) -> str:
    cmp = a.llamacpp
    if not measured(cmp):
        return shown(NotMeasured(wording.text(a.reason) or "deploy.json 中没有 llama.cpp 对比"))
    if isinstance(cmp.reason, str):
        return shown(NotMeasured(wording.text(cmp.reason)))
    if cmp.matches_llamacpp is True:
        return "参考信息：第 1 个请求的回答与 llama.cpp 直接推理的回答完全相同"
    parts = ["参考信息（不作为判定依据）"]
    if is_number(cmp.agreeing_tokens):
        parts.append(
            f"第 1 个请求的回答与 llama.cpp 的前 {fmt_general(cmp.agreeing_tokens)} 个 token 相同"
            f"（Ollama {fmt_general(cmp.ollama_answer_tokens)} 个，llama.cpp {fmt_general(cmp.llamacpp_answer_tokens)} 个）"
        )
    if cmp.parted_ollama or cmp.parted_llamacpp:
        parts.append(
            f"分叉处 Ollama 为 {_quoted(cmp.parted_ollama)}，llama.cpp 为 {_quoted(cmp.parted_llamacpp)}"
        )
    parts.append(INTERPRETATION_ZH.get(str(cmp.interpretation), "未记录判断"))
    return "；".join(parts)


def _api_test(a: ApiTest, deploy_reason: Any) -> str:
    """API 测试: the verdict and, when failed, why."""
    if a.status == "not_run":
        return f"未运行：{wording.text(a.reason) or deploy_reason or 'deploy.json 未说明原因'}"
    text = f"{facts.api_test_word(known(a.status, None))}（{len(list(a.cases))} 个请求，POST /api/generate）"
    failures = [FAILURE_ZH.get(str(f), str(f)) for f in a.failures]
    if failures:
        text += "：" + "；".join(failures)
    return text


def deployment(run: RunFiles) -> dict[str, Any]:
    """The 模型导出与部署 section's slots."""
    dp = run.deploy
    r = dp.result
    status = dp.value(r.status)
    reason = wording.reason(r.reason_code, r.reason) or None
    if measured(status):
        status_text = DEPLOY_STATUS_ZH.get(str(status), str(status))
        if status != "deployed":
            status_text += f"：{reason or 'deploy.json 未说明原因'}"
    else:
        status_text = shown(status)
    a = dp.value(r.api_test)
    cases: list[list[str]] = []
    if isinstance(a, ApiTest):
        api_text, template_text = _api_test(a, reason), _template_text(a)
        stops_text, matches_text = _stops_text(a), _llamacpp_text(a)
        cases = [_case_row(n, c) for n, c in enumerate(a.cases, start=1)]
        if a.status == "not_run":
            template_text = stops_text = matches_text = "未运行"
    else:
        api_text = template_text = stops_text = matches_text = shown(a)
    command = known(r.deploy_command, None)
    return {
        **_export(run),
        "model_name": shown(dp.value(r.model_name)),
        "host": shown(dp.value(r.host)),
        "status": status_text,
        "api_test": api_text,
        "template": template_text,
        "stops": stops_text,
        "matches": matches_text,
        "speed": _speed_note(run),
        "command": code(command) if command else None,
        "cases": cases,
    }


def _speed_note(run: RunFiles) -> str | None:
    """Ollama's decode speed in the API test beside llama-server's in the benchmark, when both were
    measured: the same GGUF, so the gap belongs to the servers, not the model."""
    dp, bm = run.deploy, run.benchmark
    if not (dp.ok and bm.ok) or not measured(dp.result.api_test) or bm.result.engine != "llamacpp":
        return None
    speeds = [c.decode_tokens_per_s for c in dp.result.api_test.cases if is_number(c.decode_tokens_per_s)]
    rows = [r for r in bm.result.summary if is_number(r.decode_tokens_per_s)]
    if not speeds or not rows:
        return None
    ollama = percentile(speeds, 50)
    first = min(rows, key=lambda r: known(r.concurrency, 0) or 0)
    server = "llama-server" if bm.result.engine_details.server == "native" else "llama.cpp 服务"
    return (
        f"Ollama 在 API 测试中解码 {fmt_float(ollama, 1)} tokens/秒（{len(speeds)} 个回答的中位数），"
        f"{server} 在基准测试中（并发 {known(first.concurrency, None)}）解码 "
        f"{fmt_float(first.decode_tokens_per_s, 1)} tokens/秒。两者运行同一个 GGUF 文件，"
        "差距来自服务端的构建（指令集、线程数）和设置，而不是模型本身；"
        "API 测试的回答较短且包含首次加载，仅作参考。"
    )
