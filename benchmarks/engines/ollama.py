"""Ollama engine of `python -m benchmarks --engine ollama` / `python run.py benchmark`.

Streams POST /api/generate (NDJSON) and times it client-side (TTFT, chunk arrivals), next to the
server's own numbers from the final `done: true` object (prompt_eval_count/duration,
eval_count/duration, load_duration, in ns). Options are pinned: num_ctx, num_predict, temperature
0, a seed and num_thread. With a known prompt format the request is `raw` (the prompt text is
rendered here exactly as in training, Ollama's template is bypassed); without one Ollama applies
the model's own template. Ollama cannot ignore EOS, so a request may stop before num_predict: the
actual eval_count is recorded. Memory: GET /api/ps (`size`, `size_vram`); model facts: /api/show
and /api/tags. Connections come from `trainer.ollama_client` (the deploy stage's client: same host
rule, loopback never proxied). Reads nothing from disk, writes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from benchmarks import metrics
from benchmarks.engines.streaming import StreamFormat, stream_request
from benchmarks.spec import BenchSettings, RawResult, RequestSpec
from trainer import ollama_client
from trainer.errors import UserError

# /api/generate streams one JSON object a line; the `done: true` one carries the timings.
OLLAMA_STREAM = StreamFormat(
    sse=False,
    text_of=lambda obj: obj.get("response"),
    is_final=lambda obj: bool(obj.get("done")),
    error_of=lambda obj: f"Ollama error mid-stream: {obj['error']}" if "error" in obj else None,
)


def _http_error(response: httpx.Response) -> str:
    return ollama_client.error_text(response) or f"HTTP {response.status_code}"


class OllamaEngine:
    name = "ollama"

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self.host = ollama_client.resolve_host(settings.host)
        self.model = settings.model
        self.raw = settings.prompt_format is not None
        timeout = httpx.Timeout(connect=5.0, read=settings.request_timeout_s, write=30.0, pool=None)
        limits = httpx.Limits(max_connections=max(settings.concurrency) + 4)
        self.client = ollama_client.http_client(self.host, timeout, limits)
        self.show: dict[str, Any] = {}
        self.version: str | None = None
        self.last_ps: dict[str, Any] | None = None

    def start(self) -> OllamaEngine:
        try:
            self.version = ollama_client.check_server(self.host, timeout_s=5.0)
        except ollama_client.OllamaUnavailable as exc:
            self.close()
            # The benchmark's own fix (another engine) replaces the deploy stage's.
            reason = str(exc).split("\n")[0]
            raise UserError(
                f"the Ollama server at {self.host} is unreachable: {reason}",
                fix="start it with `ollama serve`, set OLLAMA_HOST / --host, or use --engine llamacpp",
            ) from None
        except ollama_client.OllamaError:
            self.close()
            raise
        response = self.client.post("/api/show", json={"model": self.model}, timeout=30.0)
        if response.status_code == 404:
            self.close()
            raise UserError(
                f"model '{self.model}' not found on the Ollama server at {self.host} ({ollama_client.error_text(response)}).",
                fix="create it with `python run.py deploy`, or check the name with `ollama list`",
            )
        if response.status_code != 200:
            self.close()
            raise UserError(
                f"Ollama /api/show for '{self.model}' failed: HTTP {response.status_code} "
                f"{ollama_client.error_text(response)}"
            )
        self.show = response.json()
        return self

    def _options(self, req: RequestSpec) -> dict[str, Any]:
        return {
            "num_ctx": self.settings.num_ctx,
            "num_predict": req.max_tokens,
            "temperature": 0,
            "seed": req.seed,
            "num_thread": self.settings.threads,
        }

    def generate(self, req: RequestSpec) -> RawResult:
        if self.raw:
            body: dict[str, Any] = {"model": self.model, "prompt": req.text, "raw": True}
        else:
            body = {"model": self.model, "prompt": f"{req.tag} {req.question}"}
        body.update({"stream": True, "options": self._options(req)})
        result, final, _ = stream_request(
            self.client, "/api/generate", body, req, OLLAMA_STREAM, http_error=_http_error
        )
        if final is None:
            return result
        timings = metrics.server_timings(final)
        result.ok = True
        result.server = timings
        result.finish_reason = final.get("done_reason")
        result.output_tokens = final.get("eval_count")
        result.output_tokens_source = "server"
        result.prompt_tokens = final.get("prompt_eval_count")
        return result

    def count_tokens(self, text: str) -> int | None:
        return None  # Ollama reports prompt_eval_count itself

    def alive(self) -> bool:
        return True

    def _ps_entry(self) -> dict[str, Any] | None:
        try:
            response = self.client.get("/api/ps", timeout=10.0)
            models = response.json().get("models", []) if response.status_code == 200 else []
        except (httpx.HTTPError, json.JSONDecodeError):
            return None
        return next((m for m in models if ollama_client.same_model(m.get("name", ""), self.model)), None)

    def memory(self) -> dict[str, Any]:
        entry = self._ps_entry()
        out: dict[str, Any] = {
            "server_peak_rss_bytes": None,
            "server_peak_rss_reason": "the Ollama server is an outside process: not sampled; see ollama_size_bytes",
        }
        if entry is None:
            out.update(
                vram_bytes=None,
                vram_reason="the model was not listed by /api/ps after the run",
                ollama_size_bytes=None,
            )
            return out
        self.last_ps = entry
        vram = entry.get("size_vram")
        out["vram_bytes"] = vram
        out["vram_method"] = "Ollama /api/ps size_vram"
        if vram == 0:
            out["vram_reason"] = "Ollama reports size_vram 0: the model runs on the CPU"
        out["ollama_size_bytes"] = entry.get("size")
        out["ollama_context_length"] = entry.get("context_length")
        return out

    def describe(self) -> dict[str, Any]:
        info = self.show.get("model_info") or {}
        arch = info.get("general.architecture", "llama")
        details = (self.last_ps or {}).get("details") or self.show.get("details") or {}
        size = None
        try:
            tags = self.client.get("/api/tags", timeout=10.0).json().get("models", [])
            size = next(
                (m.get("size") for m in tags if ollama_client.same_model(m.get("name", ""), self.model)), None
            )
        except (httpx.HTTPError, json.JSONDecodeError):
            pass
        n_layer = info.get(f"{arch}.block_count")
        n_head_kv = info.get(f"{arch}.attention.head_count_kv")
        head_dim = info.get(f"{arch}.attention.key_length")
        if (
            head_dim is None
            and info.get(f"{arch}.embedding_length")
            and info.get(f"{arch}.attention.head_count")
        ):
            head_dim = info[f"{arch}.embedding_length"] // info[f"{arch}.attention.head_count"]
        kv = 2 * n_layer * n_head_kv * head_dim * 2 if n_layer and n_head_kv and head_dim else None
        return {
            "model": self.model,
            "model_size_bytes": size,
            "quantization": details.get("quantization_level"),
            "file_type": info.get("general.file_type"),
            "server_version": self.version,
            "host": self.host,
            "prompt_mode": "raw (prompt rendered with the run's prompt format)"
            if self.raw
            else "Ollama's model template",
            "fixed_length": "no: Ollama stops at EOS/stop words; actual eval_count recorded",
            "device": "gpu" if (self.last_ps or {}).get("size_vram") else "cpu",
            "arch": {
                "params": info.get("general.parameter_count"),
                "weight_bytes": size,
                "weight_bytes_source": "Ollama /api/tags model size (file size, approx. tensor bytes)",
                "kv_bytes_per_position": kv,
            },
        }

    def close(self) -> None:
        self.client.close()


def open_engine(settings: BenchSettings) -> OllamaEngine:
    return OllamaEngine(settings).start()
