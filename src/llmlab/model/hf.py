"""Hugging Face interop: export our model as a `LlamaForCausalLM` directory, import a local HF Llama
directory as our `Transformer`. Nothing is ever fetched from the hub.

Our blocks are Llama blocks (RMSNorm, RoPE in the rotate-half layout, SwiGLU, no biases, optional GQA),
so the conversion is a renaming, weight for weight (see model/transformer.py for the table):

    tok_emb.weight               ↔ model.embed_tokens.weight
    blocks.i.attn_norm.weight    ↔ model.layers.i.input_layernorm.weight
    blocks.i.attn.w{q,k,v,o}     ↔ model.layers.i.self_attn.{q,k,v,o}_proj
    blocks.i.mlp_norm.weight     ↔ model.layers.i.post_attention_layernorm.weight
    blocks.i.mlp.w_{gate,up,down}↔ model.layers.i.mlp.{gate,up,down}_proj
    norm.weight                  ↔ model.norm.weight
    lm_head.weight               ↔ lm_head.weight (left out when tied)

An exported directory holds config.json, model.safetensors, generation_config.json, tokenizer.json (via
the tokenizer's `export_hf`) and tokenizer_config.json (with the chat template when the model has one),
and loads offline with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.

GPT-2 directories (learned absolute positions, LayerNorm with bias, GELU MLP) are a different
architecture: they import as `llmlab.model.gpt2.GPT2`, a separate small network with the same calling
contract (generation, evaluation and chat work; training and `export hf` are for our Llama blocks).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from llmlab.errors import UserError
from llmlab.io import atomic_write_json, read_json
from llmlab.model.config import ModelConfig
from llmlab.model.transformer import Transformer

_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.wq.weight": "self_attn.q_proj.weight",
    "attn.wk.weight": "self_attn.k_proj.weight",
    "attn.wv.weight": "self_attn.v_proj.weight",
    "attn.wo.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.w_gate.weight": "mlp.gate_proj.weight",
    "mlp.w_up.weight": "mlp.up_proj.weight",
    "mlp.w_down.weight": "mlp.down_proj.weight",
}


def hf_name(ours: str) -> str:
    """Our parameter name → the HF Llama name."""
    if ours.startswith("blocks."):
        _, i, rest = ours.split(".", 2)
        return f"model.layers.{i}.{_BLOCK_NAMES[rest]}"
    return {
        "tok_emb.weight": "model.embed_tokens.weight",
        "norm.weight": "model.norm.weight",
        "lm_head.weight": "lm_head.weight",
    }[ours]


# ---- export ------------------------------------------------------------------------------------------


def llama_config(cfg: ModelConfig, bos_id: int | None = None, eos_ids: list[int] | None = None) -> dict:
    """The HF `LlamaConfig` fields that describe exactly our network."""
    if cfg.qk_norm:
        raise UserError("this model uses qk_norm, which HF Llama cannot express; export is not possible")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "bos_token_id": bos_id,
        "eos_token_id": eos_ids[0] if eos_ids and len(eos_ids) == 1 else eos_ids,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def export_hf(model: Transformer, tok, out_dir: str | os.PathLike, generation: dict | None = None) -> Path:
    """Write `model` (and `tok`) as a HF Llama directory in `out_dir`."""
    from safetensors.torch import save_file

    from llmlab.generate.rows import default_stop_token_ids

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = getattr(tok, "special_tokens", {}) if tok is not None else {}
    bos = specials.get("<|bos|>")
    stop_names = (generation or {}).get("stop_tokens")
    eos_ids = (
        [specials[s] for s in stop_names if s in specials]
        if stop_names
        else (default_stop_token_ids(tok) if tok is not None else [])
    )
    atomic_write_json(out / "config.json", llama_config(model.cfg, bos, eos_ids or None))
    atomic_write_json(
        out / "generation_config.json",
        {"bos_token_id": bos, "eos_token_id": eos_ids or None, "do_sample": False},
    )
    state = {
        hf_name(k): v.detach().float().contiguous().cpu()
        for k, v in model.state_dict().items()
        if not (k == "lm_head.weight" and model.cfg.tie_embeddings)
    }
    tmp = out / ".model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / "model.safetensors")
    if tok is not None:
        tok.export_hf(out / "tokenizer.json")
        inv = {v: k for k, v in specials.items()}
        tc = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": model.cfg.context,
            "clean_up_tokenization_spaces": False,
            "bos_token": inv.get(bos),
            "eos_token": inv.get(eos_ids[0]) if eos_ids else None,
            "pad_token": inv.get(bos),
            "added_tokens_decoder": {
                str(i): {
                    "content": s,
                    "special": True,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "single_word": False,
                }
                for s, i in sorted(specials.items(), key=lambda kv: kv[1])
            },
        }
        if generation and generation.get("chat_template"):
            tc["chat_template"] = hf_chat_template(generation["chat_template"])
        atomic_write_json(out / "tokenizer_config.json", tc)
    return out


def hf_chat_template(template: str) -> str:
    """generation.json's chat template → Jinja for HF: our named template, or Jinja passed through."""
    from llmlab.tokenizer.chat import CHAT_TEMPLATE_JINJA, TEMPLATE_NAME

    return (
        template
        if "{%" in template or "{{" in template
        else {TEMPLATE_NAME: CHAT_TEMPLATE_JINJA}.get(template, CHAT_TEMPLATE_JINJA)
    )


def export_model_dir(model_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """`llmlab export hf`: read an llmlab model directory, write the HF Llama directory."""
    from llmlab.model.load import load_model_dir

    model, tok = load_model_dir(model_dir)
    gen_file = Path(model_dir) / "generation.json"
    generation = read_json(gen_file, "generation config") if gen_file.is_file() else None
    if getattr(model, "kind", "lm") == "reward":  # a reward model: LlamaForSequenceClassification
        from llmlab.model.hf_reward import export_reward_hf

        return export_reward_hf(model, tok, out_dir, generation)
    if getattr(model, "kind", "lm") != "lm":
        raise UserError(f"{model_dir}: a {model.kind!r}-head model has no HF export; export the policy")
    return export_hf(model, tok, out_dir, generation)


# ---- import ------------------------------------------------------------------------------------------


def config_from_llama(hf: dict, path: Path) -> ModelConfig:
    """A HF Llama config.json → our ModelConfig, refusing anything our blocks cannot compute exactly."""
    where = f"{path}/config.json"
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling")
    if (scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default")) or rope.get(
        "rope_type", "default"
    ) != "default":
        raise UserError(f"{where}: RoPE scaling ({scaling or rope}) is not supported; only plain RoPE")
    for key, want in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if hf.get(key, want) != want:
            raise UserError(f"{where}: {key}={hf[key]!r} is not supported (need {want!r})")
    n_head = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // n_head
    if head_dim * n_head != hf["hidden_size"]:
        raise UserError(f"{where}: head_dim·num_attention_heads ≠ hidden_size is not supported")
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        n_layer=hf["num_hidden_layers"],
        d_model=hf["hidden_size"],
        n_head=n_head,
        n_kv_head=hf.get("num_key_value_heads") or n_head,
        d_ff=hf["intermediate_size"],
        context=hf.get("max_position_embeddings", 2048),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
    )


def read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF directory: model.safetensors, a sharded index, or pytorch_model.bin."""
    from safetensors.torch import load_file

    if (path / "model.safetensors").is_file():
        return load_file(str(path / "model.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(read_json(index, "weights index")["weight_map"].values())):
            state.update(load_file(str(path / shard)))
        return state
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise UserError(f"{path}: no model.safetensors or pytorch_model.bin; not a complete HF model directory")


def load_hf_llama(path: Path, hf: dict) -> Transformer:
    cfg = config_from_llama(hf, path)
    model = Transformer(cfg)
    theirs = read_hf_weights(path)
    state = {}
    for name in model.state_dict():
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue
        key = hf_name(name)
        if key not in theirs:
            raise UserError(
                f"{path}: weights lack {key}; not a Llama checkpoint that matches its config.json"
            )
        state[name] = theirs[key].float()
    model.load_state_dict(state, strict=not cfg.tie_embeddings)
    return model


def load_hf_gpt2(path: Path, hf: dict):
    """A HF GPT-2 directory → `llmlab.model.gpt2.GPT2` (same calling contract as `Transformer`)."""
    from llmlab.model.gpt2 import config_from_hf, from_hf_state

    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise UserError(f"{path}/config.json: activation_function={act!r} is not supported (need gelu_new)")
    if (
        hf.get("scale_attn_by_inverse_layer_idx")
        or hf.get("reorder_and_upcast_attn")
        or not hf.get("scale_attn_weights", True)
    ):
        raise UserError(f"{path}/config.json: non-standard GPT-2 attention scaling is not supported")
    try:
        return from_hf_state(config_from_hf(hf), read_hf_weights(path))
    except KeyError as e:
        raise UserError(
            f"{path}: weights lack {e}; not a GPT-2 checkpoint that matches its config.json"
        ) from None


def load_hf_dir(path: str | os.PathLike):
    """(model, tokenizer) from a local HF Llama (→ `Transformer`) or GPT-2 (→ `GPT2`) directory."""
    path = Path(path)
    hf = read_json(path / "config.json", "HF model config")
    kind = hf.get("model_type")
    if kind == "llama":
        model = load_hf_llama(path, hf)
    elif kind == "gpt2":
        model = load_hf_gpt2(path, hf)
    else:
        raise UserError(f"{path}/config.json: model_type {kind!r} is not supported (only 'llama' and 'gpt2')")
    tok = load_hf_tokenizer(path)
    return model.eval(), tok


# ---- tokenizer import --------------------------------------------------------------------------------


class HFTokenizer:
    """A HF `tokenizer.json` behind our Tokenizer's decoding API (encode, decode, decode_bytes,
    special_tokens, vocab_size): used when a HF directory's tokenizer is imported."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer as _HFTok

        from llmlab.tokenizer.tokenizer import bytes_to_unicode

        self.path = path
        self.hf = _HFTok.from_file(str(path))
        self.hf.no_padding()
        self.hf.no_truncation()
        self.special_tokens = {
            t.content: i for i, t in self.hf.get_added_tokens_decoder().items() if t.special
        }
        self.vocab_size = self.hf.get_vocab_size(with_added_tokens=True)
        data = json.loads(path.read_text(encoding="utf-8"))
        self.byte_level = any("ByteLevel" in json.dumps(data.get(k)) for k in ("pre_tokenizer", "decoder"))
        self._byte_of = {c: b for b, c in bytes_to_unicode().items()}

    def encode(self, text: str, allowed_special=()) -> list[int]:
        ids = self.hf.encode(text, add_special_tokens=False).ids
        if allowed_special != "all":  # tiktoken semantics: specials in plain text are not special
            inv = set(self.special_tokens.values())
            if any(i in inv for i in ids):
                raise UserError("text contains special tokens; pass allowed_special='all' to allow them")
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encode(text)

    def decode_bytes(self, ids) -> bytes:
        out = []
        inv = {v: k for k, v in self.special_tokens.items()}
        for i in ids:
            if i in inv:
                out.append(inv[i].encode("utf-8"))
                continue
            piece = self.hf.id_to_token(int(i)) or ""
            if self.byte_level:
                out.append(bytes(self._byte_of.get(c, 0) for c in piece))
            else:
                out.append(self.hf.decode([int(i)], skip_special_tokens=False).encode("utf-8"))
        return b"".join(out)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def tokenizer_from_hf_json(obj: dict):
    """A HF byte-level BPE tokenizer.json → our `Tokenizer`, or None when it is not expressible as
    (split regex, byte-level ranks, specials) with tiktoken semantics.

    tiktoken merges by the rank of the merged bytes, HF by the order of the merges list; the two agree
    when every merge's result has a larger id than the merges before it (true for GPT-2, tiktoken-derived
    vocabularies and our own exports), which is checked."""
    from llmlab.tokenizer import Tokenizer
    from llmlab.tokenizer.bpe import PATTERNS
    from llmlab.tokenizer.tokenizer import bytes_to_unicode

    model = obj.get("model") or {}
    if model.get("type") != "BPE" or obj.get("normalizer") or model.get("byte_fallback"):
        return None
    pre = obj.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    pattern = None
    for st in steps:
        if (
            st.get("type") == "Split"
            and st.get("behavior") == "Isolated"
            and not st.get("invert")
            and "Regex" in (st.get("pattern") or {})
        ):
            pattern = st["pattern"]["Regex"]
        elif st.get("type") == "ByteLevel":
            if st.get("add_prefix_space"):
                return None
            if st.get("use_regex", True):
                pattern = PATTERNS["gpt2"]
        else:
            return None
    if pattern is None:
        return None
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    added = {int(t["id"]) for t in obj.get("added_tokens", [])}
    try:
        ranks = {
            bytes(byte_of[c] for c in piece): int(i)
            for piece, i in model["vocab"].items()
            if int(i) not in added
        }
    except KeyError:
        return None
    if any(bytes([b]) not in ranks for b in range(256)):
        return None
    last = -1
    for m in model.get("merges", []):
        a, b = m.split(" ") if isinstance(m, str) else m
        rank = ranks.get(bytes(byte_of[c] for c in a + b))
        if rank is None or rank <= last:
            return None
        last = rank
    if any(not t.get("special") for t in obj.get("added_tokens", [])):
        return None  # non-special added tokens are matched before BPE: not tiktoken semantics
    specials = {t["content"]: int(t["id"]) for t in obj.get("added_tokens", [])}
    return Tokenizer(ranks, pattern, specials)


def load_hf_tokenizer(path: Path):
    """The tokenizer of a HF directory: our `Tokenizer` when its tokenizer.json is plain byte-level BPE
    (see `tokenizer_from_hf_json`), else `HFTokenizer` around the `tokenizers` library; None if absent."""
    tj = path / "tokenizer.json"
    if not tj.is_file():
        return None
    obj = read_json(tj, "HF tokenizer file")
    tok = tokenizer_from_hf_json(obj)
    return tok if tok is not None else HFTokenizer(tj)
