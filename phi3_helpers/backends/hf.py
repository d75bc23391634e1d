"""Hugging Face transformers: the reference backend (PyTorch on the CPU), and ``hf_generate_stream``,
the one streaming loop over ``model.generate`` that every transformers-API model uses (optimum-intel,
the classic NPU library)."""

from __future__ import annotations

import platform
import threading
from typing import Iterator

from ..errors import UnknownDevice
from ..options import GenerationOptions
from ..streaming import bridge
from .base import Backend


class TransformersBackend(Backend):
    name = "transformers"
    runtime = "PyTorch"
    requires = ("torch", "transformers")
    precisions = ("fp32", "bf16")

    @classmethod
    def choose_device(cls, device: str | None, settings: dict, notices: list[str]) -> str:
        if (device or "CPU").upper() not in {"CPU", "AUTO"}:
            raise UnknownDevice(
                f"the transformers backend here runs on CPU only (got {device!r}); use --device CPU, "
                "or the openvino backend for GPU/NPU."
            )
        return "CPU"

    @classmethod
    def device_report(cls) -> list[dict]:
        return [
            {
                "backend": cls.name, "device": "CPU", "available": True,
                "detail": f"PyTorch on {platform.processor() or platform.machine()}",
            }
        ]

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[self.precision]
        self.model_obj = AutoModelForCausalLM.from_pretrained(str(self.prepared_folder), dtype=dtype)
        self.model_obj.eval()

    def stream_tokens(
        self, input_ids: list[int], options: GenerationOptions, stop: threading.Event
    ) -> Iterator[list[int]]:
        yield from hf_generate_stream(
            self.model_obj, input_ids, options, stop, self.eos_token_ids, self.tokenizer.pad_token_id
        )

    def close(self) -> None:
        self.model_obj = None


def hf_generate_stream(
    model, input_ids, options: GenerationOptions, stop: threading.Event, eos_ids, pad_id
) -> Iterator[list[int]]:
    """Stream ``model.generate`` (transformers or optimum-intel) through a queue bridge.

    A StoppingCriteria checks the stop event before every token, so Stop ends generation in the
    runtime, not just on screen.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    class _StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

    def run(emit) -> None:
        class _Streamer(BaseStreamer):
            prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:  # generate() first puts the prompt
                    self.prompt_seen = True
                    return
                emit(value.reshape(-1).tolist())

            def end(self):
                pass

        ids = torch.tensor([input_ids], dtype=torch.long)
        kwargs = dict(
            max_new_tokens=options.max_new_tokens, do_sample=options.sampling, eos_token_id=sorted(eos_ids) or None,
            pad_token_id=pad_id, streamer=_Streamer(), stopping_criteria=StoppingCriteriaList([_StopOnEvent()]),
        )
        if options.sampling:
            kwargs.update(temperature=options.temperature, top_p=options.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)

    yield from bridge(run, stop)
