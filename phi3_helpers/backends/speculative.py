"""Speculative decoding in OpenVINO GenAI (CPU or GPU): the main model checks several proposed tokens in one step,
so only the speed changes. Proposals come from a draft model (``draft_model="phi3-mini-draft"``, Intel's FastDraft,
or an OpenVINO folder with the main model's tokenizer) or from the prompt (``prompt_lookup=True``: n-grams)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DeviceUnavailable, InvalidOption, ModelFolderError

#: Draft model names the course knows -> Hugging Face repository
DRAFT_MODELS = {"phi3-mini-draft": "OpenVINO/Phi-3-mini-FastDraft-50M-int8-ov"}
OPTIONS = ("draft_model", "prompt_lookup")


@dataclass(frozen=True)
class Speculation:
    """``kind``: "", "draft" or "prompt_lookup"; OpenVINO GenAI's num_assistant_tokens and max_ngram_size."""

    kind: str = ""
    draft_folder: Path | None = None
    assistant_tokens: int = 5
    ngram: int = 3


def choose(draft_model, prompt_lookup, device: str, backend: str) -> Speculation:
    """The options checked before any model loads (the draft folder is resolved at load time)."""
    if not isinstance(prompt_lookup, bool):
        raise InvalidOption(f"prompt_lookup must be True or False (got {prompt_lookup!r}).")
    if draft_model is None and not prompt_lookup:
        return Speculation()
    if draft_model is not None and prompt_lookup:
        raise InvalidOption("use draft_model= or prompt_lookup=True, not both; drop one of them.")
    refuse_elsewhere(backend, {"draft_model": draft_model, "prompt_lookup": prompt_lookup})
    if device.split(".", 1)[0] not in {"CPU", "GPU"}:
        raise DeviceUnavailable(f"speculative and prompt-lookup decoding run on CPU or GPU in this course, not "
                                f"{device}; use device='CPU' or 'GPU', or drop draft_model/prompt_lookup.")
    if prompt_lookup:
        return Speculation("prompt_lookup")
    if not isinstance(draft_model, (str, Path)) or not str(draft_model).strip():
        raise InvalidOption(f"draft_model must be a folder or {', '.join(DRAFT_MODELS)} (got {draft_model!r}).")
    return Speculation("draft", Path(str(draft_model)))


def refuse_elsewhere(backend: str, options: dict) -> None:
    """Speculative decoding asked of another backend: say where it is; unset options are dropped."""
    if backend == "openvino":
        return
    asked = [k for k in OPTIONS if options.pop(k, None) not in (None, False)]
    if asked:
        raise InvalidOption(f"{asked[0]} (speculative decoding) is offered by OpenVINO GenAI on CPU or GPU only, "
                            f"not the {backend} backend; use load('openvino', device='CPU', {asked[0]}=...).")


def resolve_draft(name_or_folder: Path) -> Path:
    """A draft model name (downloaded) or folder -> an OpenVINO model folder here."""
    name = str(name_or_folder)
    if name in DRAFT_MODELS:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(DRAFT_MODELS[name]))
        except Exception as exc:
            raise ModelFolderError(
                f"could not get the draft model {DRAFT_MODELS[name]} ({type(exc).__name__}); connect to the "
                "Hugging Face hub once, or pass draft_model=<folder> with an OpenVINO export of a small model "
                "that shares the tokenizer."
            ) from None
    folder = Path(name).expanduser()
    if not (folder / "openvino_model.xml").is_file():
        raise ModelFolderError(
            f"draft model {folder} is not an OpenVINO model folder (no openvino_model.xml); export one with "
            f"optimum-cli export openvino, or use draft_model='{next(iter(DRAFT_MODELS))}'."
        )
    return folder.resolve()


def check_same_tokenizer(main_tokenizer, draft_folder: Path) -> None:
    """A draft must use the main model's token ids, or its proposals mean other words."""
    from tokenizers import Tokenizer

    try:
        vocab = Tokenizer.from_file(str(draft_folder / "tokenizer.json")).get_vocab(with_added_tokens=True)
    except Exception:  # no tokenizer.json, or none the tokenizers library reads
        vocab = None
    if vocab != main_tokenizer.get_vocab():
        why = "its tokenizer.json differs" if vocab is not None else "no readable tokenizer.json to compare"
        raise ModelFolderError(
            f"draft model {draft_folder.name} does not share the main model's tokenizer ({why}); use a draft "
            "model made for this model (phi3-mini: draft_model='phi3-mini-draft'), or prompt_lookup=True."
        )
