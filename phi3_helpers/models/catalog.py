"""Which hub folder each backend loads for phi3-mini as it is (OpenVINO's ``-ov`` exports, Microsoft's ONNX
Runtime GenAI folders), and where each fact comes from. Only a runtime's files are fetched, never remote code."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

GB = 10**9
#: Revision override for every entry (``main``: the publisher's latest, or a mirror's own commits).
REVISION_ENV = "PHI3_HUB_REVISION"


@dataclass(frozen=True)
class HubFolder:
    """A folder on the hub; ``published_bytes``: what its page lists for our files (shown offline)."""

    repo_id: str
    patterns: tuple[str, ...]
    subfolder: str = ""
    revision: str = "main"
    published_bytes: int = 0
    source: str = ""  # where the facts above come from

    @property
    def label(self) -> str:
        return self.repo_id + (f"/{self.subfolder}" if self.subfolder else "")

    @property
    def allow_patterns(self) -> list[str]:
        prefix = f"{self.subfolder}/" if self.subfolder else ""
        return [prefix + p for p in self.patterns]

    def wanted(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, p) for p in self.allow_patterns)

    def pinned(self) -> str:
        return os.environ.get(REVISION_ENV) or self.revision


_OV_FILES = ("openvino_model.*", "openvino_tokenizer.*", "openvino_detokenizer.*", "*.json", "*.jinja")
_ORT_FILES = ("*.onnx", "*.onnx.data", "*.json", "*.jinja")  # not configuration_phi3.py: no remote code

# Sizes: the publishers' file listings at the pinned commits ("main" where no full id was published). No NPU-ready
# (symmetric int4) Phi-3-mini-4k export is published: the npu backend exports locally, its cost said first.
CHECKPOINT = HubFolder("microsoft/Phi-3-mini-4k-instruct", ("*.json", "*.safetensors", "*.model", "*.txt"),
                       published_bytes=int(7.64 * GB),
                       source="huggingface.co/microsoft/Phi-3-mini-4k-instruct (two safetensors shards, about 7.6 GB)")
OPENVINO = {
    "int4": HubFolder("OpenVINO/Phi-3-mini-4k-instruct-int4-ov", _OV_FILES, published_bytes=int(2.16 * GB),
                      source="huggingface.co/OpenVINO/Phi-3-mini-4k-instruct-int4-ov/tree/main"),
    "int8": HubFolder("OpenVINO/Phi-3-mini-4k-instruct-int8-ov", _OV_FILES,
                      revision="8141b651911b83225a49812b0ce0fb1fdc68ede7", published_bytes=int(3.83 * GB),
                      source="huggingface.co/OpenVINO/Phi-3-mini-4k-instruct-int8-ov/commits/8141b65"),
    "fp16": HubFolder("OpenVINO/Phi-3-mini-4k-instruct-fp16-ov", _OV_FILES, published_bytes=int(7.65 * GB),
                      source="huggingface.co/OpenVINO/Phi-3-mini-4k-instruct-fp16-ov/tree/main"),
}
_ONNX_REPO, _ONNX_REV = "microsoft/Phi-3-mini-4k-instruct-onnx", "24fd626412942b0bcd8f16393ef10b69cfc2d162"
ONNX = {
    ("int4", "cpu"): HubFolder(_ONNX_REPO, _ORT_FILES, "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4", _ONNX_REV,
                               int(2.73 * GB), "huggingface.co/microsoft/Phi-3-mini-4k-instruct-onnx/tree/24fd626"),
    ("int4", "dml"): HubFolder(_ONNX_REPO, _ORT_FILES, "directml/directml-int4-awq-block-128", _ONNX_REV,
                               int(2.14 * GB), "huggingface.co/microsoft/Phi-3-mini-4k-instruct-onnx/tree/761b194"),
}
#: What a local export costs (for the plan): the checkpoint download plus the export's own output.
EXPORT_OUTPUT_BYTES = {"int4": int(2.2 * GB), "int8": int(3.8 * GB), "fp16": int(7.6 * GB)}


def hub_folder(backend: str, precision: str, target: str | None = None) -> HubFolder | None:
    """The prequantized folder for phi3-mini on this backend, or None when it must be exported locally."""
    if backend in {"openvino", "openvino-optimum"}:
        return OPENVINO.get(precision)
    if backend == "onnx":
        return ONNX.get((precision, target or "cpu"))
    if backend == "transformers":
        return CHECKPOINT
    return None  # npu: no NPU-ready export is published


def describe_export(precision: str) -> str:
    """The cost of preparing phi3-mini locally from the checkpoint, said before it starts."""
    out = EXPORT_OUTPUT_BYTES.get(precision, EXPORT_OUTPUT_BYTES["int4"])
    return (f"no prequantized folder for this backend: downloads {CHECKPOINT.repo_id} (about "
            f"{gb(CHECKPOINT.published_bytes)}) and prepares it here (an export: several minutes, about {gb(out)} "
            "more disk, RAM for the whole model)")


def gb(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / 10**6:.1f} MB"
