"""SFT: the loss counts only assistant tokens; a tiny run writes a chat model directory and learns."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import llmlab
from llmlab.config import load_recipe
from llmlab.data.chat_batches import IGNORE_INDEX, pad_batch
from llmlab.data.synthetic import conversations
from llmlab.errors import UserError
from llmlab.model import ModelConfig, Transformer
from llmlab.model.load import save_model_dir
from llmlab.tokenizer import Tokenizer
from llmlab.train.sft import sft, sft_loss


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    texts = [m["content"] for c in conversations("mix")[:600] for m in c]
    tok = Tokenizer.train(texts, 400)
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size, n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=128, context=96
        )
    )
    d = tmp_path_factory.mktemp("base")
    save_model_dir(d, model, tok)
    return d


def test_loss_is_mean_over_assistant_tokens_only(base_dir):
    model, tok = llmlab.load(base_dir)
    convs = conversations("arithmetic")[:3]
    seqs = [tok.render_chat(c) for c in convs]
    loss_sum, count, metrics = sft_loss(model, pad_batch(seqs))
    loss = loss_sum / count
    # slow reference: each conversation alone, −log p of each masked token, averaged over all of them
    nll = []
    with torch.no_grad():
        for ids, mask in seqs:
            logp = F.log_softmax(model(torch.tensor([ids]))[0], dim=-1)
            nll += [-float(logp[t - 1, ids[t]]) for t in range(1, len(ids)) if mask[t]]
    assert metrics["tokens"] == len(nll) > 0
    assert math.isclose(float(loss.detach()), sum(nll) / len(nll), rel_tol=1e-5)
    # the loss never reads the logits at non-assistant positions: scrambling them changes nothing,
    # scrambling one assistant position changes it
    batch = pad_batch(seqs)
    trained = batch["targets"] != IGNORE_INDEX

    def scrambled(where: torch.Tensor):
        def forward(ids, **kw):
            logits = model(ids, **kw)
            noise = 10 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))
            return torch.where(where[..., None], noise, logits)

        return forward

    with torch.no_grad():
        same = sft_loss(scrambled(~trained), batch)[0] / count
        one = torch.zeros_like(trained)
        one.view(-1)[trained.view(-1).nonzero()[0]] = True
        changed = sft_loss(scrambled(one), batch)[0] / count
    assert torch.equal(same, loss.detach())
    assert not math.isclose(float(changed), float(loss.detach()), rel_tol=1e-4)


def test_loss_of_a_micro_batch_with_nothing_trained_is_zero_and_backpropagates(base_dir):
    # a micro-batch whose conversations were all truncated before the assistant spoke
    model, tok = llmlab.load(base_dir)
    batch = pad_batch([tok.render_chat(c) for c in conversations("arithmetic")[:2]])
    batch["targets"][:] = IGNORE_INDEX
    loss_sum, count, _ = sft_loss(model, batch)
    loss_sum.backward()
    assert count == 0 and float(loss_sum.detach()) == 0.0
    assert all(float(p.grad.abs().sum()) == 0.0 for p in model.parameters() if p.grad is not None)


def test_sft_run_writes_a_chat_model_dir_and_learns(base_dir, tmp_path):
    recipe = load_recipe(
        None,
        [
            "sft.steps=40",
            "sft.batch_size=4",
            "sft.lr=3e-3",
            "sft.data=builtin:arithmetic",
            "train.log_every=100",
            "train.device=cpu",
        ],
    )
    out = tmp_path / "sft"
    s = sft(recipe, base_dir, out, verbose=False)
    assert s["steps"] == 40 and s["conversations"] == len(conversations("arithmetic"))
    assert s["val_conversations"] == len(conversations("arithmetic", "test"))
    assert s["val_loss"] < s["base_val_loss"] - 1.0  # held-out answers got much more likely
    gen = json.loads((out / "generation.json").read_text())
    assert gen["chat_template"] == "llmlab-v2" and gen["stop_tokens"] == ["<|end|>", "<|bos|>"]
    model, tok = llmlab.load(out)
    assert tok.special_tokens["<|assistant|>"] and model.cfg.context == 96
    assert "[sft]" in (out / "recipe.toml").read_text()


def test_sft_bad_input(base_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "a", "completion": "b"}\n{"messages": [{"role": "assistant", "content": "x"}]}\n'
    )
    recipe = load_recipe(None, ["sft.steps=1"])
    with pytest.raises(UserError, match=r"bad\.jsonl:2: message 0"):
        sft(recipe, base_dir, tmp_path / "o", data=str(bad), verbose=False)
    with pytest.raises(UserError, match="row_len"):
        sft(load_recipe(None, ["sft.row_len=1000"]), base_dir, tmp_path / "o", verbose=False)
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "word " * 200, "completion": "ok"}) + "\n")
    with pytest.raises(UserError, match=r"long\.jsonl:1: conversation has \d+ tokens"):
        sft(
            load_recipe(None, ["sft.truncate=error"]), base_dir, tmp_path / "o", data=str(long), verbose=False
        )
