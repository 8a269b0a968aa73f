"""The model directory: one writer, and a reader that never sees a half-written checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

import llmlab
from llmlab.errors import UserError
from llmlab.model import ModelConfig, Transformer
from llmlab.model.load import save_model_dir
from llmlab.tokenizer import Tokenizer

CFG = dict(vocab_size=300, n_layer=1, d_model=32, n_head=2, n_kv_head=1, d_ff=64, context=16)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(["the king and the queen walk by the river " * 20], 300)


def model(seed: int, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig(**{**CFG, **kw}))


def test_round_trip_keeps_every_weight_and_stores_the_tied_head_once(tmp_path, tok):
    m = model(0)
    save_model_dir(tmp_path, m, tok, generation={"temperature": 0.0})
    back, tok2 = llmlab.load(tmp_path)
    assert back.cfg == m.cfg and tok2.vocab_size == tok.vocab_size
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()  # noqa: SIM118
    assert json.loads((tmp_path / "generation.json").read_text()) == {"temperature": 0.0}
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_reader_between_a_new_config_and_its_weights_loads_the_old_model_whole(tmp_path, tok):
    """A checkpoint writes config.json, then the weights: a reader in between (or after a kill there)
    finds a new config.json beside old weights, and must still get the old model, consistent."""
    old = model(0)
    save_model_dir(tmp_path, old, tok)
    (tmp_path / "config.json").write_text(
        json.dumps({"format": "llmlab-model", "version": 1, **ModelConfig(**{**CFG, "n_layer": 3}).to_dict()})
    )
    back, _ = llmlab.load(tmp_path)
    assert back.cfg.n_layer == 1
    assert all(torch.equal(back.state_dict()[k], v) for k, v in old.state_dict().items())


def test_the_state_argument_saves_a_gathered_state_dict(tmp_path, tok):
    m, other = model(0), model(1)
    save_model_dir(tmp_path, m, tok, state=other.state_dict())
    back, _ = llmlab.load(tmp_path)
    assert torch.equal(back.tok_emb.weight, other.tok_emb.weight)


def test_weights_written_before_the_embedded_config_still_load(tmp_path, tok):
    from safetensors.torch import save_file

    m = model(0)
    save_model_dir(tmp_path, m, tok)
    state = {k: v for k, v in m.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    back, _ = llmlab.load(tmp_path)
    assert torch.equal(back.tok_emb.weight, m.tok_emb.weight)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt weights file"):
        llmlab.load(tmp_path)
