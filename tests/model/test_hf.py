"""HF interop: our export loads in transformers with equal logits; HF Llama directories import exactly."""

from __future__ import annotations

import json

import pytest
import torch

import llmlab
from llmlab.errors import UserError
from llmlab.model import ModelConfig, Transformer
from llmlab.model.hf import export_hf, hf_name
from llmlab.model.load import save_model_dir

transformers = pytest.importorskip("transformers")

TEXT = "The quick brown fox jumps over the lazy dog. Ünïcödé, 123 4567!\n" * 20


@pytest.fixture(scope="module")
def tok():
    from llmlab.tokenizer import Tokenizer

    return Tokenizer.train([TEXT], vocab_size=256 + 40 + 10, engine="python", show_progress=False)


def _model(tok_vocab: int, tie: bool, n_kv_head: int = 2, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=tok_vocab,
        n_layer=2,
        d_model=32,
        n_head=4,
        n_kv_head=n_kv_head,
        d_ff=48,
        context=64,
        tie_embeddings=tie,
        rope_theta=5000.0,
        init_std=0.1,
    )
    m = Transformer(cfg)
    with torch.no_grad():  # non-trivial norm gains so a mis-mapped norm would show
        for p in m.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return m.eval()


@pytest.mark.parametrize("tie,n_kv_head", [(True, 2), (False, 4)])
def test_export_loads_in_transformers_with_equal_logits(tmp_path, tok, tie, n_kv_head):
    model = _model(tok.vocab_size, tie, n_kv_head)
    out = export_hf(model, tok, tmp_path / "hf", generation={"chat_template": "llmlab-v2"})
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    ids = torch.randint(0, tok.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(ids).logits
        ours = model(ids)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)

    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert hf_tok.encode(TEXT[:200], add_special_tokens=False) == tok.encode(TEXT[:200])
    msgs = [{"role": "user", "content": "Hi there"}]
    assert hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == tok.decode(
        tok.render_for_generation(msgs)
    )


def _random_hf_llama(tmp_path, tie: bool, tok=None):
    cfg = transformers.LlamaConfig(
        vocab_size=300 if tok is None else tok.vocab_size,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
        rope_theta=20000.0,
    )
    torch.manual_seed(3)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    hf.save_pretrained(tmp_path / "hfllama")
    if tok is not None:
        tok.export_hf(tmp_path / "hfllama" / "tokenizer.json")
    return hf, tmp_path / "hfllama"


@pytest.mark.parametrize("tie", [True, False])
def test_import_hf_llama_equal_logits(tmp_path, tie, tok):
    hf, path = _random_hf_llama(tmp_path, tie, tok)
    model, our_tok = llmlab.load(path)
    assert isinstance(model, Transformer) and model.cfg.tie_embeddings == tie
    ids = torch.randint(0, hf.config.vocab_size, (2, 19), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)
    # The byte-level BPE tokenizer.json became our own Tokenizer, encoding identically.
    from llmlab.tokenizer import Tokenizer

    assert isinstance(our_tok, Tokenizer)
    assert our_tok.encode(TEXT) == tok.encode(TEXT)
    assert our_tok.special_tokens == tok.special_tokens


def test_export_import_round_trip_through_model_dir(tmp_path, tok):
    from llmlab.model.hf import export_model_dir

    model = _model(tok.vocab_size, tie=True)
    save_model_dir(tmp_path / "ours", model, tok)
    export_model_dir(tmp_path / "ours", tmp_path / "hf")
    back, tok2 = llmlab.load(tmp_path / "hf")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, atol=0, rtol=0)
    assert tok2.encode(TEXT) == tok.encode(TEXT)


def test_weight_names_cover_the_model():
    m = _model(300, tie=False)
    names = {hf_name(k) for k in m.state_dict()}
    assert len(names) == len(m.state_dict())
    assert "model.layers.1.self_attn.k_proj.weight" in names and "lm_head.weight" in names


def _random_hf_gpt2(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    cfg = transformers.GPT2Config(vocab_size=320, n_positions=48, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(4)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "ln" in name or "bias" in name:
                p.uniform_(-0.5, 1.5)
    hf.save_pretrained(tmp_path / "gpt2")
    bpe = ByteLevelBPETokenizer()  # GPT-2's tokenizer pipeline (byte-level, GPT-2 regex), trained tiny
    bpe.train_from_iterator([TEXT], vocab_size=320, special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.save(str(tmp_path / "gpt2" / "tokenizer.json"))
    return hf, bpe, tmp_path / "gpt2"


def test_import_hf_gpt2_equal_logits_and_generation(tmp_path):
    from llmlab.generate import Engine, SamplingParams
    from llmlab.model.gpt2 import GPT2

    hf, bpe, path = _random_hf_gpt2(tmp_path)
    model, tok = llmlab.load(path)
    assert isinstance(model, GPT2)
    ids = torch.randint(0, 320, (2, 21), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)
        theirs = hf.generate(
            ids[:1, :5], max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, 5:].tolist()
    # The KV-cached engine on the imported GPT-2 reproduces HF's greedy decoding.
    ours = Engine(model, stop_token_ids=[]).generate_ids(
        [ids[0, :5].tolist()], SamplingParams(temperature=0, max_new_tokens=10)
    )[0]
    assert ours.token_ids == theirs
    assert tok.encode(TEXT) == bpe.encode(TEXT).ids
    assert tok.decode(tok.encode(TEXT[:80])) == TEXT[:80]


def test_unsupported_dirs_are_refused(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(UserError, match="not supported"):
        llmlab.load(d)
    (d / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_act": "gelu",
                "num_attention_heads": 4,
                "hidden_size": 32,
                "vocab_size": 10,
                "num_hidden_layers": 1,
                "intermediate_size": 8,
            }
        )
    )
    with pytest.raises(UserError, match="hidden_act"):
        llmlab.load(d)


def test_qk_norm_cannot_be_exported(tmp_path):
    cfg = ModelConfig(
        vocab_size=300, n_layer=1, d_model=32, n_head=4, n_kv_head=4, d_ff=32, context=16, qk_norm=True
    )
    with pytest.raises(UserError, match="qk_norm"):
        export_hf(Transformer(cfg), None, tmp_path / "x")


def test_other_hf_tokenizers_are_wrapped(tmp_path):
    """A tokenizer.json that is not plain byte-level BPE (here: a lowercasing normalizer) is run by the
    `tokenizers` library behind our API."""
    from tokenizers import ByteLevelBPETokenizer

    from llmlab.model.hf import HFTokenizer, load_hf_tokenizer

    bpe = ByteLevelBPETokenizer(lowercase=True)
    bpe.train_from_iterator([TEXT], vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.save(str(tmp_path / "tokenizer.json"))
    tok = load_hf_tokenizer(tmp_path)
    assert isinstance(tok, HFTokenizer)
    assert tok.encode("Hello Wörld") == bpe.encode("Hello Wörld").ids
    assert tok.decode(tok.encode("Hello Wörld")) == "hello wörld"
    assert tok.special_tokens == {"<|endoftext|>": 0}
    with pytest.raises(UserError, match="allowed_special"):
        tok.encode("a<|endoftext|>")
    assert tok.encode("a<|endoftext|>", allowed_special="all")[-1] == 0
