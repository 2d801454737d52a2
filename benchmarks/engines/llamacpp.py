"""llama.cpp engine of `python -m benchmarks --engine llamacpp` / `python run.py benchmark`.

Starts a llama.cpp server on 127.0.0.1 with the GGUF as a child process (log to a file), waits
until it answers, streams one request per prompt and times it client-side, and stops the server
afterwards, also on an error or Ctrl-C. Two servers, chosen by `server` ("auto" prefers native):

- native: llama.cpp's own `llama-server` (built from the same llama.cpp source by the bootstrap
  into `.venv/bin/`; `$LLAMA_SERVER` or PATH also count). `--parallel` = the highest concurrency
  level with a per-slot context of `num_ctx`, so concurrent requests are batched. POST
  /completion with `ignore_eos` (fixed output length) and `cache_prompt: false` (no prompt cache).
  Each chunk says how many tokens were generated so far; the final one carries the server's own
  timings (prompt_ms, predicted_ms, predicted_per_second), recorded beside the client-side ones.
- python: llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`), POST
  /v1/completions. It has no `ignore_eos`: every end-of-generation token id from the GGUF header
  gets `logit_bias` -1000 and no stop strings are sent, so each request runs to max_tokens. It
  reports no timings, and it runs one request at a time (a lock), so concurrency > 1 measures
  queueing. `--interrupt_requests False`: by default it cancels a streaming request as soon as
  another one arrives.

The prompt is the raw text rendered with the run's prompt format, so the template matches training.
Reads the GGUF file; writes the server log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from benchmarks import metrics
from benchmarks.engines.streaming import StreamFormat, stream_request
from benchmarks.memory import PeakSampler
from benchmarks.spec import BenchSettings, RawResult, RequestSpec
from trainer.config import BenchmarkConfig, choices
from trainer.errors import UserError
from trainer.gguf_info import GGUFInfo, check_gguf, read_gguf

HOST = "127.0.0.1"
EOG_BIAS = -1000.0


SERVERS = choices(BenchmarkConfig, "llamacpp_server")

# llama-cpp-python's /v1/completions: OpenAI chunks, the one with a finish_reason last, then [DONE].
OPENAI_STREAM = StreamFormat(
    sse=True,
    text_of=lambda obj: obj["choices"][0].get("text"),
    is_final=lambda obj: bool(obj["choices"][0].get("finish_reason")),
    done_marker=True,
)
# llama-server's /completion: {"content", "tokens_predicted", "stop"}; the `stop: true` one carries
# the timings.
NATIVE_STREAM = StreamFormat(
    sse=True,
    text_of=lambda obj: obj.get("content"),
    is_final=lambda obj: bool(obj.get("stop")),
    error_of=lambda obj: (
        f"server error: {json.dumps(obj['error'], ensure_ascii=False)[:300]}" if "error" in obj else None
    ),
)


def find_native_server() -> tuple[Path | None, str]:
    """The llama-server binary to use, and where it was found (or why there is none)."""
    env = os.environ.get("LLAMA_SERVER")
    if env:
        path = Path(env)
        if path.is_file() and os.access(path, os.X_OK):
            return path, f"$LLAMA_SERVER={env}"
        return None, f"$LLAMA_SERVER={env} is not an executable file"
    venv_bin = Path(sys.executable).parent / "llama-server"
    if venv_bin.is_file() and os.access(venv_bin, os.X_OK):
        return venv_bin, f"{venv_bin} (built by the bootstrap)"
    found = shutil.which("llama-server")
    if found:
        return Path(found), f"{found} (PATH)"
    return None, "no llama-server in .venv/bin or on PATH (the bootstrap builds it; see its log)"


def _version(binary: Path) -> str | None:
    """`llama-server --version`'s version line, e.g. 'version: 0.5.0-dev (build 1, commit 0c1e570)'."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.startswith("version")]
    return lines[0] if lines else None


def choose_server(choice: str) -> tuple[str, Path | None, str]:
    """('native' | 'python', binary, reason) for --server auto / native / python."""
    if choice not in SERVERS:
        raise UserError(f"llama.cpp server {choice!r} is not known.", fix=f"use one of: {', '.join(SERVERS)}")
    if choice == "python":
        return "python", None, "--server python: llama-cpp-python's server"
    binary, where = find_native_server()
    if binary is not None:
        return "native", binary, f"native llama-server: {where}"
    if choice == "native":
        raise UserError(
            f"the native llama.cpp server was asked for, but {where}.",
            fix="run `python3 -m trainer.bootstrap`, set $LLAMA_SERVER, or pass --server python",
        )
    return "python", None, f"llama-cpp-python's server ({where})"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the benchmark process dies, even by SIGKILL,
    so no server is left running (Linux prctl PR_SET_PDEATHSIG, tied to the thread that starts
    the server: the main thread here; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self.model_path = Path(settings.model).resolve()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sampler: PeakSampler | None = None
        self.client: httpx.Client | None = None
        self.port = 0
        self._log_fh: Any = None
        self._info_future: Future[GGUFInfo] | None = None
        self.startup_s: float | None = None
        self.command: list[str] = []
        self.server, self.binary, self.server_reason = choose_server(settings.llamacpp_server)
        self.parallel = max(settings.concurrency) if self.server == "native" else 1

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> LlamaCppEngine:
        check_gguf(self.model_path)
        if self.settings.port:
            if port_in_use(self.settings.port):
                raise UserError(
                    f"port {self.settings.port} on {HOST} is in use.",
                    fix="pass another --port, or 0 (the default) to pick a free one",
                )
            self.port = self.settings.port
        else:
            self.port = free_port()
        # Reading the header (slow for a big vocabulary) overlaps the server's start-up.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-gguf")
        self._info_future = pool.submit(read_gguf, self.model_path)
        pool.shutdown(wait=False)
        log_path = self.settings.server_log
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="llamacpp-server-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log_fh = open(log_path, "wb")  # noqa: SIM115 (closed in close())
        self.command = self._command()
        t0 = time.perf_counter()
        # Own session: a Ctrl-C in the terminal reaches only us, and we stop the server in order.
        self.proc = subprocess.Popen(
            self.command, stdout=self._log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
        self.sampler = PeakSampler(self.proc.pid).start()
        timeout = httpx.Timeout(connect=5.0, read=self.settings.request_timeout_s, write=30.0, pool=None)
        self.client = httpx.Client(
            base_url=f"http://{HOST}:{self.port}", timeout=timeout,
            limits=httpx.Limits(max_connections=max(self.settings.concurrency) + 4),
        )  # fmt: skip
        try:
            self._wait_ready(t0)
            self.info = self._info_future.result()
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - t0
        return self

    def _command(self) -> list[str]:
        t = str(self.settings.threads)
        if self.server == "native":
            assert self.binary is not None
            return [
                str(self.binary),
                "--model", str(self.model_path),
                "--host", HOST, "--port", str(self.port),
                # Total context = slots x per-request context, so each request gets num_ctx.
                "--ctx-size", str(self.settings.num_ctx * self.parallel),
                "--parallel", str(self.parallel),
                "--threads", t, "--threads-batch", t,
                "--n-gpu-layers", str(self.settings.n_gpu_layers),
                "--seed", str(self.settings.seed),
                "--no-webui",
            ]  # fmt: skip
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--host", HOST, "--port", str(self.port),
            "--n_ctx", str(self.settings.num_ctx),
            "--n_threads", t, "--n_threads_batch", t,
            "--n_gpu_layers", str(self.settings.n_gpu_layers),
            "--seed", str(self.settings.seed),
            # llama-server's default (auto) turns it on; here it is off unless asked for.
            "--flash_attn", "True",
            "--interrupt_requests", "False",
        ]  # fmt: skip

    def _wait_ready(self, t0: float) -> None:
        assert self.proc is not None and self.client is not None
        deadline = t0 + self.settings.startup_timeout_s
        while time.perf_counter() < deadline:
            code = self.proc.poll()
            if code is not None:
                self._log_fh.flush()
                tail = _log_tail(self.log_path)
                if "address already in use" in tail.lower() or "couldn't bind" in tail.lower():
                    raise UserError(
                        f"the llama.cpp server could not listen on {HOST}:{self.port}: the port is in use.",
                        fix="pass another --port, or 0 (the default) to pick a free one",
                    )
                raise UserError(
                    f"the llama.cpp server exited during start-up (exit code {code}). Last log lines "
                    f"({self.log_path}):\n{tail}",
                    fix="check that the model is a complete GGUF this llama.cpp can load (the log says what failed)",
                )
            # llama-server's /health answers 503 while the model loads, 200 when it is ready.
            ready_path = "/health" if self.server == "native" else "/v1/models"
            with contextlib.suppress(httpx.HTTPError):
                if self.client.get(ready_path, timeout=2.0).status_code == 200:
                    return
            time.sleep(0.25)
        raise UserError(
            f"the llama.cpp server did not answer on {HOST}:{self.port} within "
            f"{self.settings.startup_timeout_s:g} s. Last log lines:\n{_log_tail(self.log_path)}",
            fix="raise --startup-timeout (a large model loads slowly) or check the log",
        )

    def close(self) -> None:
        if self.sampler is not None:
            self.memory_result = self.sampler.result()
            self.sampler.stop()
            self.sampler = None
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- requests ---------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int | None:
        if self.client is None:
            return None
        try:
            if self.server == "native":
                response = self.client.post("/tokenize", json={"content": text}, timeout=30.0)
                return len(response.json()["tokens"]) if response.status_code == 200 else None
            response = self.client.post("/extras/tokenize/count", json={"input": text}, timeout=30.0)
            return int(response.json()["count"]) if response.status_code == 200 else None
        except (httpx.HTTPError, KeyError, ValueError, TypeError):
            return None

    def generate(self, req: RequestSpec) -> RawResult:
        assert self.client is not None
        if self.server == "native":
            return self._generate_native(req)
        body = {
            "prompt": req.text,
            "max_tokens": req.max_tokens,
            "temperature": 0.0,
            "seed": req.seed,
            "stream": True,
            "logit_bias": {str(i): EOG_BIAS for i in self.info.eog_token_ids},
        }
        result, final, _ = stream_request(self.client, "/v1/completions", body, req, OPENAI_STREAM)
        if final is None:
            return result
        result.ok = True
        result.finish_reason = final["choices"][0]["finish_reason"]
        if result.finish_reason == "length":
            result.output_tokens = req.max_tokens
            result.output_tokens_source = "max_tokens"
        # otherwise the runner retokenizes the text (untimed, after the level)
        return result

    def _generate_native(self, req: RequestSpec) -> RawResult:
        assert self.client is not None
        body = {
            "prompt": req.text,
            "n_predict": req.max_tokens,
            "ignore_eos": True,
            "cache_prompt": False,
            "temperature": 0.0,
            "seed": req.seed,
            "stream": True,
        }
        result, final, first = stream_request(self.client, "/completion", body, req, NATIVE_STREAM)
        if first is not None:
            # tokens generated when the first text came: > 1 when a character took several tokens
            result.first_chunk_tokens = first.get("tokens_predicted")
        if final is None:
            return result
        result.ok = True
        stop_type = final.get("stop_type")
        result.finish_reason = "length" if stop_type == "limit" else (stop_type or "stop")
        if isinstance(final.get("tokens_predicted"), int):
            result.output_tokens = final["tokens_predicted"]
            result.output_tokens_source = "server"
        if isinstance(final.get("tokens_evaluated"), int):
            result.prompt_tokens = final["tokens_evaluated"]
        if isinstance(final.get("timings"), dict):
            result.server = metrics.llamacpp_server_timings(final["timings"])
        return result

    # -- facts ------------------------------------------------------------------------------
    def memory(self) -> dict[str, Any]:
        if self.sampler is not None:
            return self.sampler.result()
        return getattr(
            self,
            "memory_result",
            {"server_peak_rss_bytes": None, "vram_bytes": None, "vram_reason": "not sampled"},
        )

    def describe(self) -> dict[str, Any]:
        info = self.info
        import importlib.metadata as md

        return {
            "model": str(self.model_path),
            "model_size_bytes": info.file_size_bytes,
            "quantization": info.quantization,
            "file_type": info.file_type,
            "gguf": info.to_dict(),
            "server_command": " ".join(self.command),
            "server_pid": self.proc.pid if self.proc else None,
            "server_log": str(self.log_path),
            "server_startup_s": self.startup_s,
            "server": self.server,
            "server_reason": self.server_reason,
            "server_parallel_slots": self.parallel,
            "llama_server_version": _version(self.binary) if self.binary else None,
            "llama_cpp_python": md.version("llama_cpp_python"),
            "fixed_length": (
                "yes: ignore_eos, no stop strings"
                if self.server == "native"
                else f"yes: logit_bias {EOG_BIAS:g} on end-of-generation ids {info.eog_token_ids}, "
                "no stop strings"
            ),
            "device": "cpu" if not (self.memory().get("vram_bytes") or 0) else "gpu",
            "arch": {
                "params": info.params,
                "weight_bytes": info.tensor_bytes,
                "weight_bytes_source": "GGUF tensor bytes",
                "kv_bytes_per_position": info.kv_bytes_per_position(2),
            },
        }


def open_engine(settings: BenchSettings) -> LlamaCppEngine:
    return LlamaCppEngine(settings).start()
