"""Speculative decoding in OpenVINO GenAI: a small draft model, or prompt lookup, proposes tokens
that the main model checks in one step. Greedy output is the main model's own; only speed changes.

- ``load("openvino", draft_model="phi3-mini-draft")``: Intel's FastDraft model for Phi-3-mini
  (``OpenVINO/Phi-3-mini-FastDraft-50M-int8-ov``), or any OpenVINO folder whose tokenizer is the
  main model's.
- ``load("openvino", prompt_lookup=True)``: proposals copied from the prompt itself (n-gram lookup),
  no second model; fits input-grounded tasks such as correcting or rewriting a given paragraph.

Both run on OpenVINO GenAI's continuous-batching (paged attention) pipeline on CPU or GPU; for the
NPU, OpenVINO GenAI wants a draft model on the NPU and no prompt lookup, which this course does not
set up, so it is refused with a one-line error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeviceUnavailable, InvalidOption, ModelFolderError

#: Draft model names the course knows -> Hugging Face repository
DRAFT_MODELS = {"phi3-mini-draft": "OpenVINO/Phi-3-mini-FastDraft-50M-int8-ov"}
#: Proposals per step (OpenVINO GenAI's num_assistant_tokens and max_ngram_size)
DEFAULT_ASSISTANT_TOKENS = 5
DEFAULT_NGRAM = 3


@dataclass(frozen=True)
class Speculation:
    """How an OpenVINO GenAI pipeline speculates: ``kind`` is "", "draft" or "prompt_lookup"."""

    kind: str = ""
    draft_folder: Path | None = None
    assistant_tokens: int = DEFAULT_ASSISTANT_TOKENS
    ngram: int = DEFAULT_NGRAM

    def describe(self) -> str:
        if self.kind == "draft":
            return f"speculative decoding with draft {self.draft_folder.name}"
        return "prompt-lookup decoding" if self.kind == "prompt_lookup" else ""


def choose(draft_model, prompt_lookup, device: str, backend: str) -> Speculation:
    """Check the options (cheap, before any model loads); the draft folder is resolved later."""
    if not isinstance(prompt_lookup, bool):
        raise InvalidOption(f"prompt_lookup must be True or False (got {prompt_lookup!r}).")
    if draft_model is None and not prompt_lookup:
        return Speculation()
    if draft_model is not None and prompt_lookup:
        raise InvalidOption("use draft_model= or prompt_lookup=True, not both; drop one of them.")
    if backend != "openvino":
        raise InvalidOption(
            f"speculative decoding is offered by OpenVINO GenAI only, not the {backend} backend; "
            "use load('openvino', draft_model=...) or load('openvino', prompt_lookup=True)."
        )
    if device.split(".", 1)[0] not in {"CPU", "GPU"}:
        raise DeviceUnavailable(
            f"speculative and prompt-lookup decoding run on CPU or GPU in this course, not {device}; "
            "use device='CPU' or 'GPU', or drop draft_model/prompt_lookup."
        )
    if prompt_lookup:
        return Speculation("prompt_lookup")
    if not isinstance(draft_model, (str, Path)) or not str(draft_model).strip():
        raise InvalidOption(f"draft_model must be a folder or {', '.join(DRAFT_MODELS)} (got {draft_model!r}).")
    return Speculation("draft", Path(str(draft_model)))


def refuse_elsewhere(backend: str, options: dict) -> None:
    """load() asked another backend for speculative decoding: say where it exists."""
    asked = [k for k in ("draft_model", "prompt_lookup") if options.get(k) not in (None, False)]
    if asked and backend != "openvino":
        raise InvalidOption(
            f"{asked[0]} (speculative decoding) is offered by OpenVINO GenAI on CPU or GPU only, "
            f"not the {backend} backend; use load('openvino', device='CPU', {asked[0]}=...)."
        )
    for k in ("draft_model", "prompt_lookup"):
        if backend != "openvino" and k in options:
            options.pop(k)  # None / False: nothing asked


def resolve_draft(name_or_folder: Path) -> Path:
    """A draft model name or folder -> an OpenVINO model folder here (downloads a known name)."""
    name = str(name_or_folder)
    if name in DRAFT_MODELS:
        from huggingface_hub import snapshot_download

        repo = DRAFT_MODELS[name]
        try:
            return Path(snapshot_download(repo))
        except Exception as exc:
            raise ModelFolderError(
                f"could not get the draft model {repo} ({type(exc).__name__}); connect to the Hugging Face hub once, "
                "or pass draft_model=<folder> with an OpenVINO export of a small model that shares the tokenizer."
            ) from None
    folder = Path(name).expanduser()
    if not (folder / "openvino_model.xml").is_file():
        raise ModelFolderError(
            f"draft model {folder} is not an OpenVINO model folder (no openvino_model.xml); export one with "
            f"optimum-cli export openvino, or use draft_model='{next(iter(DRAFT_MODELS))}'."
        )
    return folder.resolve()


def _vocab(folder: Path):
    """The draft's vocabulary (token -> id) from its Hugging Face tokenizer files, else None."""
    f = folder / "tokenizer.json"
    if not f.is_file():
        return None
    model = json.loads(f.read_text(encoding="utf-8"))
    vocab = dict(model.get("model", {}).get("vocab") or {})
    for t in model.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
    return vocab


def check_same_tokenizer(main_tokenizer, draft_folder: Path) -> None:
    """A draft must use the main model's token ids, or its proposals mean other words."""
    vocab = _vocab(draft_folder)
    fix = "use a draft model made for this model (phi3-mini: draft_model='phi3-mini-draft'), or prompt_lookup=True."
    if vocab is None:
        raise ModelFolderError(
            f"draft model {draft_folder} has no tokenizer.json to check against the main model; {fix}"
        )
    if vocab != main_tokenizer.get_vocab():
        raise ModelFolderError(f"draft model {draft_folder.name} does not share the main model's tokenizer; {fix}")
