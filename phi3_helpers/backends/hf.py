"""Hugging Face transformers on the CPU (the reference backend), and the streaming loop over ``model.generate`` of
every transformers-API model (optimum-intel, the classic NPU library)."""

from __future__ import annotations

import threading
from typing import Iterator

from ..options import GenerationOptions
from ..prefix import PrefixCache
from ..streaming import bridge
from .base import Backend


class GenerateAPI(Backend):
    """A model with the transformers API (``self.model_obj.generate``), streamed by :func:`hf_generate_stream`;
    with ``keeps_cache`` its generate() continues a DynamicCache kept between answers."""

    keeps_cache = False

    def stream_tokens(self, input_ids: list[int], options: GenerationOptions, stop: threading.Event):
        kv = self.kv if self.keeps_cache else None
        pad = self.tokenizer.pad_token_id
        yield from hf_generate_stream(self.model_obj, input_ids, options, stop, self.eos_token_ids, pad, kv=kv)

    def close(self) -> None:
        self.model_obj = None
        self.kv.reset()


class TransformersBackend(GenerateAPI):
    name = "transformers"
    runtime = "PyTorch"
    requires = ("torch", "transformers")
    precisions = ("fp32", "bf16")
    keeps_cache = True

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[self.precision]
        self.model_obj = AutoModelForCausalLM.from_pretrained(str(self.prepared_folder), dtype=dtype).eval()


def hf_generate_stream(
    model, input_ids, options: GenerationOptions, stop: threading.Event, eos_ids, pad_id, kv: PrefixCache | None = None
) -> Iterator[list[int]]:
    """``model.generate`` streamed through a queue bridge; a StoppingCriteria ends it when ``stop`` is set. With
    ``kv`` (reuse on) one DynamicCache is kept between answers, cropped to the new prompt's common prefix."""
    import torch
    from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

    if options.sampling:
        sampling = {"temperature": options.temperature, "top_p": options.top_p}
    else:
        sampling = {"temperature": None, "top_p": None, "top_k": None}
    kv = kv if kv is not None and kv.enabled else None  # reuse off: generate() makes its own cache

    def run(emit) -> None:
        produced: list[int] = []

        class Streamer(BaseStreamer):
            prompt_seen = False  # generate() puts the prompt first

            def put(self, value):
                if self.prompt_seen:
                    new = value.reshape(-1).tolist()
                    produced.extend(new)
                    emit(new)
                self.prompt_seen = True

            def end(self):
                pass

        if kv is not None:
            keep = kv.plan(input_ids)
            if kv.runtime is None or keep == 0:
                kv.reset()
                kv.runtime = DynamicCache(config=model.config)
            else:
                kv.runtime.crop(keep)
                kv.hold(kv.ids[:keep])
        ids = torch.tensor([input_ids], dtype=torch.long)
        try:
            with torch.inference_mode():
                model.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=options.max_new_tokens,
                    do_sample=options.sampling, eos_token_id=sorted(eos_ids) or None, pad_token_id=pad_id,
                    streamer=Streamer(), stopping_criteria=StoppingCriteriaList([StopOnEvent()]), **sampling,
                    **({"past_key_values": kv.runtime} if kv is not None else {}),
                )
        except BaseException:
            if kv is not None:
                kv.reset()  # the cache may hold part of a step: start clean next time
            raise
        if kv is not None:  # the cache holds every token but the last one produced (fed with the next prompt)
            kv.hold((list(input_ids) + produced)[: kv.runtime.get_seq_length()])

    yield from bridge(run, stop)
