"""Each runtime driven with its own API, with no phi3_helpers code in the token loop.

These loops are the yardstick for the helper's overhead: same model folder, precision, device,
runtime settings, prompt token ids and token count as the helper, and the same timing rule
(time to first token from the call to the first token's callback; ms per token over the tokens
after the first). Only the folder and the runtime settings are taken from the loaded helper
backend, so both sides really load the same thing.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence


@dataclass
class Run:
    """One timed generation."""

    ttft_ms: float
    ms_per_token: float | None  # None when fewer than 2 tokens came out
    tokens: int
    total_s: float
    cpu_ms_per_token: float  # process CPU time of the whole call / tokens (threads included)
    token_ids: list[int] = field(default_factory=list, repr=False)
    #: median time between tokens after the first (robust to a run being preempted now and then)
    median_interval_ms: float | None = None


def median_interval(stamps: Sequence[tuple[float, int]]) -> float | None:
    """Median ms per token between successive (time, tokens so far) stamps."""
    import statistics

    gaps = [(t1 - t0) * 1000.0 / (n1 - n0) for (t0, n0), (t1, n1) in zip(stamps, stamps[1:]) if n1 > n0]
    return statistics.median(gaps) if gaps else None


class TokenClock:
    """Timestamps of the tokens a runtime hands back; the raw loops' only per-token work."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.first: float | None = None
        self.last: float | None = None
        self.ids: list[int] = []
        self.stamps: list[tuple[float, int]] = []

    def tick(self, ids: Sequence[int]) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.ids.extend(ids)
        self.stamps.append((now, len(self.ids)))

    def run(self) -> Run:
        end = time.perf_counter()
        cpu = time.process_time() - self.cpu0
        n = len(self.ids)
        if not n or self.first is None:
            raise RuntimeError("the runtime produced no tokens")
        per = (self.last - self.first) * 1000.0 / (n - 1) if n > 1 and self.last > self.first else None
        return Run((self.first - self.t0) * 1000.0, per, n, end - self.t0, cpu * 1000.0 / n, list(self.ids), median_interval(self.stamps))


class RawLoop:
    """A runtime loaded and driven directly. ``api`` names the calls, for the report.

    ``run`` calls the runtime from the same kind of thread as phi3_helpers does: a worker thread
    for the callback runtimes the helper bridges with a queue (OpenVINO GenAI, transformers,
    optimum-intel), the caller's thread for ORT GenAI's pull loop. On a busy 2-core machine the
    calling thread alone changed PyTorch's decode speed several-fold (docs/tuning.md), which is
    not overhead of the helper's code.
    """

    api: ClassVar[str] = ""
    in_thread: bool = True

    def __init__(self, llm) -> None:
        self.llm = llm
        self.eos = sorted(llm.eos_token_ids)

    def run(self, input_ids: list[int], max_new_tokens: int) -> Run:
        if not self.in_thread:
            return self._run(input_ids, max_new_tokens)
        out: list = []

        def work() -> None:
            try:
                out.append(self._run(input_ids, max_new_tokens))
            except BaseException as exc:  # re-raised below, in the caller's thread
                out.append(exc)

        t = threading.Thread(target=work, name="raw-generate", daemon=True)
        t.start()
        t.join()
        if isinstance(out[0], BaseException):
            raise out[0]
        return out[0]

    def _run(self, input_ids: list[int], max_new_tokens: int) -> Run:
        raise NotImplementedError

    def close(self) -> None:
        pass


# -- transformers (PyTorch) ---------------------------------------------------------------------
def _hf_generate(model, input_ids: list[int], max_new_tokens: int, eos: list[int], pad_id) -> Run:
    import torch
    from transformers.generation.streamers import BaseStreamer

    clock = TokenClock()

    class Clock(BaseStreamer):
        prompt_seen = False

        def put(self, value):
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            clock.tick(value.reshape(-1).tolist())

        def end(self):
            pass

    ids = torch.tensor([input_ids], dtype=torch.long)
    with torch.inference_mode():
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=eos or None,
            pad_token_id=pad_id,
            streamer=Clock(),
        )
    return clock.run()


class TransformersRaw(RawLoop):
    api = "AutoModelForCausalLM.from_pretrained + model.generate(streamer=...)"

    def __init__(self, llm) -> None:
        super().__init__(llm)
        import torch
        from transformers import AutoModelForCausalLM

        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[llm.precision]
        self.model = AutoModelForCausalLM.from_pretrained(str(llm.model.folder), dtype=dtype).eval()

    def _run(self, input_ids, max_new_tokens):
        return _hf_generate(self.model, input_ids, max_new_tokens, self.eos, self.llm.tokenizer.pad_token_id)

    def close(self):
        self.model = None


# -- OpenVINO -----------------------------------------------------------------------------------
def openvino_settings(llm) -> dict:
    """The runtime settings the helper uses for this backend (same function, not a copy)."""
    from ..backends.openvino import runtime_config

    cfg = runtime_config(llm.device, llm.ov_folder)
    if getattr(llm, "name", "") == "npu" and str(llm.device).startswith("NPU"):
        from ..backends.npu import blob_cache_dir, npu_pipeline_config

        cfg = npu_pipeline_config(llm.max_prompt_len, llm.min_response_len, blob_cache_dir(llm.ov_folder))
    cfg.update(getattr(llm, "extra_config", {}) or {})
    return cfg


class GenAIRaw(RawLoop):
    api = "openvino_genai.LLMPipeline(folder, device, **config).generate(TokenizedInputs, config, StreamerBase)"

    def __init__(self, llm) -> None:
        super().__init__(llm)
        import openvino_genai as ov_genai

        self.settings = openvino_settings(llm)
        self.pipe = ov_genai.LLMPipeline(str(llm.ov_folder), llm.device, **self.settings)

    def _run(self, input_ids, max_new_tokens):
        import numpy as np
        import openvino as ov
        import openvino_genai as ov_genai

        cfg = self.pipe.get_generation_config()
        cfg.max_new_tokens = max_new_tokens
        cfg.do_sample = False
        cfg.stop_token_ids = set(self.eos)
        ids = np.asarray([input_ids], dtype=np.int64)
        inputs = ov_genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
        running = ov_genai.StreamingStatus.RUNNING
        clock = TokenClock()

        class Clock(ov_genai.StreamerBase):
            def write(self, token):
                clock.tick(token if isinstance(token, list) else [token])
                return running

            def end(self):
                pass

        clock.t0, clock.cpu0 = time.perf_counter(), time.process_time()
        self.pipe.generate(inputs, cfg, Clock())
        return clock.run()

    def close(self):
        self.pipe = None


class OptimumRaw(RawLoop):
    api = "optimum.intel.OVModelForCausalLM.from_pretrained(folder, device, ov_config) + generate(streamer=...)"

    def __init__(self, llm) -> None:
        super().__init__(llm)
        from optimum.intel import OVModelForCausalLM

        self.settings = openvino_settings(llm)
        self.model = OVModelForCausalLM.from_pretrained(str(llm.ov_folder), device=llm.device, ov_config=self.settings, compile=True)

    def _run(self, input_ids, max_new_tokens):
        return _hf_generate(self.model, input_ids, max_new_tokens, self.eos, self.llm.tokenizer.pad_token_id)

    def close(self):
        self.model = None


# -- ONNX Runtime GenAI -------------------------------------------------------------------------
class ORTGenAIRaw(RawLoop):
    api = "onnxruntime_genai Config/Model, Generator loop (append_tokens, generate_next_token, get_next_tokens)"
    in_thread = False  # the onnx backend's loop runs in the reader's thread too

    def __init__(self, llm) -> None:
        super().__init__(llm)
        import onnxruntime_genai as og

        self.folder = runtime_folder(llm)
        config = og.Config(str(self.folder))
        # The same session settings the onnx backend applies: a folder built for another
        # provider runs on the CPU provider, and intra_op_num_threads is the backend's own
        # (0 = ONNX Runtime's default, one thread per physical core).
        if getattr(llm, "target_built", "cpu") != llm.choice.provider:
            config.clear_providers()
        if llm.choice.provider == "cpu":
            n = getattr(llm, "threads", None) or 0
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": n}}}}))
        self.model = og.Model(config)

    def _run(self, input_ids, max_new_tokens):
        import onnxruntime_genai as og

        clock = TokenClock()
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=min(len(input_ids) + max_new_tokens, self.llm.context_length), do_sample=False)
        gen = og.Generator(self.model, params)
        gen.append_tokens(list(input_ids))
        eos = set(self.eos)
        while not gen.is_done():
            gen.generate_next_token()
            new = [int(t) for t in gen.get_next_tokens()]
            clock.tick(new)
            if len(clock.ids) >= max_new_tokens or eos.intersection(new):
                break
        del gen
        return clock.run()

    def close(self):
        self.model = None


#: backend name -> raw loop class
RAW_LOOPS: dict[str, type[RawLoop]] = {
    "transformers": TransformersRaw,
    "openvino": GenAIRaw,
    "openvino-optimum": OptimumRaw,
    "npu": GenAIRaw,  # the maintained NPU path is OpenVINO GenAI's LLMPipeline
    "onnx": ORTGenAIRaw,
}


def raw_loop_for(llm) -> RawLoop | None:
    """The raw loop for a loaded helper backend, or None when the bench has none for it."""
    if getattr(llm, "path", "maintained") == "classic":
        return None
    cls = RAW_LOOPS.get(llm.name)
    return cls(llm) if cls else None


def runtime_folder(llm) -> Path:
    """The folder the runtime actually loads (export folder, or the Hugging Face folder)."""
    for attr in ("ov_folder", "onnx_folder", "prepared_folder", "model_folder"):
        value = getattr(llm, attr, None)
        if value:
            return Path(value)
    return Path(llm.model.folder)
