"""Serving metrics as pure functions of recorded timings (no I/O, no clocks).

Used by `python -m benchmarks` and `python run.py benchmark` to turn each request's timestamps
into TTFT, TPOT, inter-token latency, end-to-end latency and tokens/s, to summarise a concurrency
level (mean, p50, p90, p99; aggregate tokens/s; requests/s), and to compute the roofline decode
limit. Definitions follow vLLM's benchmark_serving:

- TTFT: request sent -> first generated text arrives.
- TPOT: (e2e - TTFT) / (output_tokens - 1); undefined (None) with fewer than two tokens.
- ITL: gaps between consecutive streamed chunks (one chunk is usually one token; a Chinese
  character split over two tokens arrives as one chunk).
- decode tokens/s per request: (output_tokens - 1) / (e2e - TTFT); aggregate tokens/s of a level:
  all output tokens of the level / the level's wall time.

Times come in seconds and leave in milliseconds where the key says `_ms`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

from trainer.metrics import mean, percentile

PERCENTILES = (50, 90, 99)


def distribution(values: Iterable[float | None]) -> dict[str, float | None]:
    """{mean, p50, p90, p99} of the values that exist; all None when there are none."""
    data = [float(v) for v in values if v is not None and not math.isnan(v)]
    out: dict[str, float | None] = {"mean": mean(data)}
    for q in PERCENTILES:
        out[f"p{q}"] = percentile(data, q)
    return out


def tpot_ms(e2e_s: float, ttft_s: float | None, output_tokens: int | None) -> float | None:
    """Time per output token after the first, in ms; None when it is undefined (< 2 tokens)."""
    if ttft_s is None or output_tokens is None or output_tokens < 2:
        return None
    return (e2e_s - ttft_s) / (output_tokens - 1) * 1000.0


def inter_token_latencies_ms(chunk_times_s: Sequence[float]) -> list[float]:
    """Gaps between consecutive chunk arrivals, in ms (empty for fewer than two chunks)."""
    return [(b - a) * 1000.0 for a, b in itertools.pairwise(chunk_times_s)]


def decode_tokens_per_s(e2e_s: float, ttft_s: float | None, output_tokens: int | None) -> float | None:
    """Tokens after the first per second of decoding; None when undefined."""
    if ttft_s is None or output_tokens is None or output_tokens < 2:
        return None
    decode_s = e2e_s - ttft_s
    if decode_s <= 0:
        return None
    return (output_tokens - 1) / decode_s


def prompt_tokens_per_s(prompt_tokens: int | None, ttft_s: float | None) -> float | None:
    """Client-side prompt processing speed: prompt tokens / TTFT (includes queueing and network)."""
    if prompt_tokens is None or ttft_s is None or ttft_s <= 0:
        return None
    return prompt_tokens / ttft_s


def request_metrics(
    start_s: float,
    end_s: float,
    first_token_s: float | None,
    chunk_times_s: Sequence[float],
    output_tokens: int | None,
    prompt_tokens: int | None,
) -> dict[str, Any]:
    """Per-request metrics from absolute timestamps (same clock) and token counts."""
    e2e_s = end_s - start_s
    ttft_s = None if first_token_s is None else first_token_s - start_s
    itl = inter_token_latencies_ms(chunk_times_s)
    return {
        "ttft_ms": None if ttft_s is None else ttft_s * 1000.0,
        "e2e_ms": e2e_s * 1000.0,
        "tpot_ms": tpot_ms(e2e_s, ttft_s, output_tokens),
        "itl_ms": itl,
        "decode_tokens_per_s": decode_tokens_per_s(e2e_s, ttft_s, output_tokens),
        "prompt_tokens_per_s": prompt_tokens_per_s(prompt_tokens, ttft_s),
    }


def server_timings(final: dict[str, Any]) -> dict[str, Any]:
    """Ollama's own timings from its final (`done: true`) object; durations come in ns."""

    def ms(key: str) -> float | None:
        value = final.get(key)
        return None if value is None else value / 1e6

    eval_count = final.get("eval_count")
    eval_ns = final.get("eval_duration")
    prompt_count = final.get("prompt_eval_count")
    prompt_ns = final.get("prompt_eval_duration")
    return {
        "prompt_eval_count": prompt_count,
        "prompt_eval_ms": ms("prompt_eval_duration"),
        "eval_count": eval_count,
        "eval_ms": ms("eval_duration"),
        "load_ms": ms("load_duration"),
        "total_ms": ms("total_duration"),
        "decode_tokens_per_s": eval_count / eval_ns * 1e9 if eval_count and eval_ns else None,
        "prompt_tokens_per_s": prompt_count / prompt_ns * 1e9 if prompt_count and prompt_ns else None,
    }


def llamacpp_server_timings(timings: dict[str, Any]) -> dict[str, Any]:
    """llama-server's `timings` object (final chunk) under the same keys as `server_timings`.

    Its prompt_ms runs from the slot taking the request to the first token being sampled; its
    predicted_per_second counts decode steps after the first token, (n - 1) / predicted_ms, the
    definition of `decode_tokens_per_s` here.
    """

    def num(key: str) -> float | None:
        value = timings.get(key)
        return float(value) if isinstance(value, int | float) else None

    prompt_ms, eval_ms = num("prompt_ms"), num("predicted_ms")
    return {
        "prompt_eval_count": timings.get("prompt_n"),
        "prompt_eval_ms": prompt_ms,
        "eval_count": timings.get("predicted_n"),
        "eval_ms": eval_ms,
        "load_ms": None,
        "total_ms": prompt_ms + eval_ms if prompt_ms is not None and eval_ms is not None else None,
        "decode_tokens_per_s": num("predicted_per_second") or None,
        "prompt_tokens_per_s": num("prompt_per_second") or None,
        "cached_prompt_tokens": timings.get("cache_n"),
    }


def _relative(client: float | None, server: float | None) -> float | None:
    return (client - server) / server if client is not None and server else None


def timing_agreement(samples: Sequence[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """Client-side vs server-reported TTFT and decode speed, for requests at one concurrency level.

    Compared like with like. The server's prompt time ends when the first token is sampled; the
    client sees text when the first whole character is streamed, k tokens in (k > 1 when a Chinese
    character takes several byte-level tokens; the server says k, else k = 1). So the server's time
    to that chunk is prompt_eval_ms + (k - 1) x its ms per decoded token, and the client's decode
    speed counts the tokens timed between its first and last chunk: (n - k) / (e2e - TTFT).
    Differences are (client - server) / server.
    """
    rows = [s for s in samples if s.get("ok") and s.get("concurrency") == concurrency and s.get("server")]
    if not rows:
        return {"concurrency": concurrency, "requests": 0, "reason": "no request with server timings"}
    ttft_pairs, decode_pairs = [], []
    for s in rows:
        server = s["server"]
        k = s.get("first_chunk_tokens") or 1
        n, ttft, e2e = s.get("output_tokens"), s.get("ttft_ms"), s.get("e2e_ms")
        server_tps = server.get("decode_tokens_per_s")
        if ttft is not None and server.get("prompt_eval_ms") and (k == 1 or server_tps):
            extra_ms = (k - 1) * 1000.0 / server_tps if k > 1 else 0.0
            ttft_pairs.append((ttft, server["prompt_eval_ms"] + extra_ms))
        if n and n > k and ttft is not None and e2e and e2e > ttft and server_tps:
            decode_pairs.append(((n - k) / ((e2e - ttft) / 1000.0), server_tps))

    def summary(pairs: list[tuple[float, float]]) -> dict[str, Any]:
        if not pairs:
            return {"requests": 0, "client_mean": None, "server_mean": None, "difference": None}
        client = mean(c for c, _ in pairs)
        server = mean(v for _, v in pairs)
        worst = max((_relative(c, v) or 0.0 for c, v in pairs), key=abs)
        return {
            "requests": len(pairs),
            "client_mean": client,
            "server_mean": server,
            "difference": _relative(client, server),
            "worst_request_difference": worst,
        }

    firsts = [s.get("first_chunk_tokens") for s in rows if s.get("first_chunk_tokens")]
    return {
        "concurrency": concurrency,
        "requests": len(rows),
        "first_chunk_tokens_mean": mean(firsts),
        "ttft_ms": summary(ttft_pairs),
        "decode_tokens_per_s": summary(decode_pairs),
    }


def summarize_level(samples: Sequence[dict[str, Any]], concurrency: int, wall_s: float) -> dict[str, Any]:
    """One row of `summary`: the requests of one concurrency level (all repetitions).

    `wall_s` is the summed wall time of the level's repetitions, first send to last completion.
    Failed requests count in `failures` and nowhere else.
    """
    ok = [s for s in samples if s.get("ok")]
    output_tokens_total = sum(s.get("output_tokens") or 0 for s in ok)
    row: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": len(samples),
        "completed": len(ok),
        "failures": len(samples) - len(ok),
        "ttft_ms": distribution(s.get("ttft_ms") for s in ok),
        "tpot_ms": distribution(s.get("tpot_ms") for s in ok),
        "itl_ms": distribution(v for s in ok for v in (s.get("itl_ms") or [])),
        "e2e_ms": distribution(s.get("e2e_ms") for s in ok),
        "decode_tokens_per_s": mean(s.get("decode_tokens_per_s") for s in ok),
        "prompt_tokens_per_s": mean(s.get("prompt_tokens_per_s") for s in ok),
        "output_tokens_total": output_tokens_total,
        "output_tokens_mean": output_tokens_total / len(ok) if ok else None,
        "prompt_tokens_mean": mean(s.get("prompt_tokens") for s in ok),
        "wall_s": wall_s,
        "aggregate_tokens_per_s": output_tokens_total / wall_s if ok and wall_s > 0 else None,
        "requests_per_s": len(ok) / wall_s if ok and wall_s > 0 else None,
    }
    server = [s.get("server") for s in ok if s.get("server")]
    if server:
        row["server_decode_tokens_per_s"] = mean(t.get("decode_tokens_per_s") for t in server)
        row["server_prompt_tokens_per_s"] = mean(t.get("prompt_tokens_per_s") for t in server)
    if not ok:
        row["reason"] = "all requests failed" if samples else "no requests were run"
    if row["decode_tokens_per_s"] is None:
        row["decode_tokens_per_s_reason"] = row.get("reason") or "no request produced 2 or more tokens"
    return row


def roofline(
    bandwidth_bytes_per_s: float | None,
    bytes_per_token: float | None,
    peak_flops_per_s: float | None,
    params: int | None,
    achieved_tokens_per_s: float | None,
) -> dict[str, Any]:
    """Decode speed limit: min(bandwidth / bytes read per token, peak FLOP/s / (2 x params)).

    Each decoded token reads every weight once (plus the KV cache) and does ~2 FLOPs per weight.
    `achieved_fraction` = achieved / limit; None where an input is missing.
    """
    memory_limit = (
        bandwidth_bytes_per_s / bytes_per_token if bandwidth_bytes_per_s and bytes_per_token else None
    )
    compute_limit = peak_flops_per_s / (2 * params) if peak_flops_per_s and params else None
    limits = {k: v for k, v in (("memory", memory_limit), ("compute", compute_limit)) if v is not None}
    bound = min(limits, key=lambda k: limits[k]) if limits else None
    limit = limits[bound] if bound else None
    return {
        "bandwidth_bytes_per_s": bandwidth_bytes_per_s,
        "bytes_per_token": bytes_per_token,
        "memory_limit_tokens_per_s": memory_limit,
        "peak_flops_per_s": peak_flops_per_s,
        "params": params,
        "compute_limit_tokens_per_s": compute_limit,
        "limit_tokens_per_s": limit,
        "bound": bound,
        "achieved_tokens_per_s": achieved_tokens_per_s,
        "achieved_fraction": achieved_tokens_per_s / limit if achieved_tokens_per_s and limit else None,
    }
