"""In-process transformers engine of `python -m benchmarks --engine transformers`: the unexported
baseline (the merged Hugging Face model before GGUF conversion and quantization).

Loads an HF folder (`--model DIR`) or, with transformers' GGUF support, a `.gguf` file (weights
dequantized to float32); a folder loads in its saved dtype on a GPU and in float32 on a CPU.
Greedy generation in a background thread with a TextIteratorStreamer
whose `put()` is timed per token, so TTFT and inter-token latency are per token. Fixed length:
`min_new_tokens = max_new_tokens` (EOS suppressed). Requests run one at a time behind a lock: a
single model object, no batching, so concurrency > 1 measures queueing. Memory: peak RSS of this
process; on CUDA `torch.cuda.max_memory_reserved`. Reads the model files; writes nothing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.memory import PeakSampler
from benchmarks.spec import BenchSettings, RawResult, RequestSpec
from trainer.errors import UserError


class TransformersEngine:
    name = "transformers"

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self.path = Path(settings.model).resolve()
        self.lock = threading.Lock()
        self.sampler: PeakSampler | None = None

    def start(self) -> TransformersEngine:
        import os

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not self.path.exists():
            raise UserError(
                f"model {self.path} does not exist.",
                fix="pass a Hugging Face model folder (config.json + weights) or a .gguf file to --model",
            )
        self.sampler = PeakSampler(os.getpid()).start()
        torch.set_num_threads(self.settings.threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        t0 = time.perf_counter()
        try:
            if self.path.is_file() and self.path.suffix == ".gguf":
                kwargs: dict[str, Any] = {"gguf_file": self.path.name}
                source = str(self.path.parent)
                self.loaded_from = "GGUF (dequantized by transformers)"
            elif (self.path / "config.json").is_file():
                # The saved dtype on a GPU; float32 on a CPU, where bf16/fp16 matmuls are slow
                # without native support (the training stage also runs fp32 on CPU).
                kwargs = {"dtype": "auto" if self.device == "cuda" else torch.float32}
                source = str(self.path)
                self.loaded_from = "Hugging Face folder"
            else:
                raise UserError(
                    f"{self.path} is neither a Hugging Face model folder (no config.json) nor a .gguf file.",
                    fix="pass the merged model folder (export: models/finetuned) or a .gguf file",
                )
            self.tokenizer = AutoTokenizer.from_pretrained(
                source, **{k: v for k, v in kwargs.items() if k == "gguf_file"}
            )
            self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs).to(self.device).eval()
        except UserError:
            self.close()
            raise
        except (OSError, ValueError) as exc:
            self.close()
            raise UserError(f"transformers could not load {self.path}: {exc}") from None
        self.load_s = time.perf_counter() - t0
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        return self

    def count_tokens(self, text: str) -> int | None:
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def generate(self, req: RequestSpec) -> RawResult:
        # The clock starts before the queue, as for a server: waiting counts in TTFT.
        start = time.perf_counter()
        with self.lock:
            return self._generate(req, start)

    def _generate(self, req: RequestSpec, start: float) -> RawResult:
        import queue

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        result = RawResult(ok=False, start_s=start, end_s=start)
        token_times: list[float] = []
        stop = threading.Event()

        class TimedStreamer(TextIteratorStreamer):
            def put(self, value: Any) -> None:  # called once per generated token (after the prompt)
                if not self.next_tokens_are_prompt:
                    token_times.append(time.perf_counter())
                super().put(value)

        class StopOnTimeout(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full(
                    (input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device
                )

        outputs: dict[str, Any] = {}
        deadline = start + req.timeout_s
        try:
            inputs = self.tokenizer(req.text, return_tensors="pt", add_special_tokens=True).to(self.device)
            streamer = TimedStreamer(self.tokenizer, skip_prompt=True, timeout=req.timeout_s)

            def work() -> None:
                try:
                    with torch.inference_mode():
                        outputs["ids"] = self.model.generate(
                            **inputs, streamer=streamer, max_new_tokens=req.max_tokens,
                            min_new_tokens=req.max_tokens, do_sample=False,
                            stopping_criteria=StoppingCriteriaList([StopOnTimeout()]),
                            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                        )  # fmt: skip
                except Exception as exc:  # reported as this request's failure
                    outputs["error"] = exc
                    streamer.end()

            thread = threading.Thread(target=work, name="bench-generate", daemon=True)
            thread.start()
            pieces = []
            for piece in streamer:  # queue.Empty when no token came for timeout_s
                pieces.append(piece)
                if time.perf_counter() > deadline:
                    raise TimeoutError
            thread.join()
        except (queue.Empty, TimeoutError):
            stop.set()  # the generation thread stops at its next token
            thread.join(timeout=60)
            result.end_s = time.perf_counter()
            result.error = f"request timed out after {req.timeout_s:g} s (request timeout)"
            return result
        except Exception as exc:
            stop.set()
            result.end_s = time.perf_counter()
            result.error = f"{type(exc).__name__}: {exc}"
            return result
        result.end_s = time.perf_counter()
        if "error" in outputs or "ids" not in outputs:
            error = outputs.get("error", "generation ended without output")
            result.error = f"{type(error).__name__}: {error}" if isinstance(error, Exception) else str(error)
            return result
        prompt_len = inputs["input_ids"].shape[1]
        result.ok = True
        result.text = "".join(pieces)
        result.chunk_times_s = token_times
        result.first_token_s = token_times[0] if token_times else None
        result.prompt_tokens = int(prompt_len)
        result.output_tokens = int(outputs["ids"].shape[1] - prompt_len)
        result.output_tokens_source = "generated_ids"
        result.finish_reason = "length" if result.output_tokens >= req.max_tokens else "stop"
        return result

    def alive(self) -> bool:
        return True

    def memory(self) -> dict[str, Any]:
        out = self.sampler.result() if self.sampler else {"server_peak_rss_bytes": None}
        out["rss_method"] = "psutil RSS of this (benchmark) process: the model runs in-process"
        if getattr(self, "device", "cpu") == "cuda":
            import torch

            out["vram_bytes"] = int(torch.cuda.max_memory_reserved())
            out["vram_method"] = "torch.cuda.max_memory_reserved"
            out.pop("vram_reason", None)
        return out

    def describe(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.model.parameters())
        weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        dtype = next(self.model.parameters()).dtype
        cfg = self.model.config
        n_kv = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", None)
        head_dim = getattr(cfg, "head_dim", None) or (cfg.hidden_size // cfg.num_attention_heads)
        elem = next(self.model.parameters()).element_size()
        if self.path.is_file():
            size = self.path.stat().st_size
        else:
            size = sum(
                p.stat().st_size
                for p in self.path.iterdir()
                if p.suffix in (".safetensors", ".bin") and p.is_file()
            )
        return {
            "model": str(self.path),
            "model_size_bytes": size,
            "quantization": f"none ({str(dtype).removeprefix('torch.')})",
            "loaded_from": self.loaded_from,
            "load_s": self.load_s,
            "fixed_length": "yes: min_new_tokens = max_new_tokens",
            "device": self.device,  # after fixed_length, as the other engines write them
            "arch": {
                "params": params,
                "weight_bytes": weight_bytes,
                "weight_bytes_source": f"parameter bytes in memory ({dtype})",
                "kv_bytes_per_position": 2 * cfg.num_hidden_layers * n_kv * head_dim * elem,
            },
        }

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()


def open_engine(settings: BenchSettings) -> TransformersEngine:
    return TransformersEngine(settings).start()
