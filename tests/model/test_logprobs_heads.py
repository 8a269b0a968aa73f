"""Final hidden states, chunked per-token log-probs (values, gradients, entropy) and scalar heads."""

from __future__ import annotations

import torch

from llmlab.model import ModelConfig, Transformer
from llmlab.model.heads import ScalarHeadModel
from llmlab.model.load import load_model_dir, save_model_dir
from llmlab.model.logprobs import selected_logprobs, sequence_logprobs, token_logprobs

CFG = ModelConfig(vocab_size=97, n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=64, context=24)


def test_hidden_states_times_the_head_are_the_logits():
    torch.manual_seed(0)
    m = Transformer(CFG)
    ids = torch.randint(0, 97, (2, 11))
    torch.testing.assert_close(m.lm_head(m(ids, return_hidden=True)).float(), m(ids))


def test_chunked_logprobs_equal_the_full_log_softmax_with_gradients():
    torch.manual_seed(0)
    a, b = Transformer(CFG), Transformer(CFG)
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 97, (3, 17))
    mask = (torch.arange(17)[None] >= torch.tensor([[4], [9], [2]])).long()
    lp, ent = token_logprobs(a, ids, chunk=5, with_entropy=True)  # chunks of 5 over 16 targets
    full = torch.log_softmax(b(ids), -1)[:, :-1]
    ref = full.gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(lp, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, -(full.exp() * full).sum(-1).detach(), atol=1e-5, rtol=0)
    (lp * mask[:, 1:]).sum().backward()
    (ref * mask[:, 1:]).sum().backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(
            sequence_logprobs(a, ids, mask, chunk=4), (ref * mask[:, 1:]).sum(1), atol=1e-4, rtol=0
        )


def test_selected_logprobs_and_a_model_without_a_separate_head_give_the_same_numbers():
    torch.manual_seed(0)
    m = Transformer(CFG)

    class LogitsOnly(torch.nn.Module):  # like the imported GPT-2 network: logits, no `lm_head`
        def __init__(self):
            super().__init__()
            self.net = m

        def forward(self, ids, positions=None, attn_mask=None):
            return self.net(ids, positions=positions, attn_mask=attn_mask)

    ids = torch.randint(0, 97, (3, 13))
    source = torch.tensor([0, 5, 11, 12 + 7, 2 * 13 + 3])  # flat positions b·T + t
    targets = ids.flatten()[source + 1]
    full_lp, full_ent = token_logprobs(m, ids, with_entropy=True)
    for model in (m, LogitsOnly()):
        lp, ent = selected_logprobs(model, ids, source, targets, rows=2, with_entropy=True)
        want = torch.cat([full_lp, torch.zeros(3, 1)], 1).flatten()[source]
        torch.testing.assert_close(lp, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            ent, torch.cat([full_ent, torch.zeros(3, 1)], 1).flatten()[source], atol=1e-5, rtol=0
        )
    torch.testing.assert_close(token_logprobs(LogitsOnly(), ids), full_lp, atol=1e-5, rtol=0)
    empty = selected_logprobs(m, ids, source[:0], targets[:0])
    assert empty.shape == (0,) and empty.requires_grad  # an empty selection stays in the graph


def test_reward_and_value_heads_round_trip_through_a_model_directory(tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(0, 97, (2, 9))
    lengths = torch.tensor([9, 5])
    for kind in ("reward", "value"):
        m = ScalarHeadModel(Transformer(CFG), kind)
        save_model_dir(tmp_path / kind, m)
        back, _ = load_model_dir(tmp_path / kind)
        assert isinstance(back, ScalarHeadModel) and back.kind == kind
        out = back(ids, lengths) if kind == "reward" else back(ids)
        torch.testing.assert_close(out, m(ids, lengths) if kind == "reward" else m(ids))
    r = ScalarHeadModel(Transformer(CFG), "reward")
    assert torch.equal(r(ids, lengths), r.values(ids)[torch.arange(2), lengths - 1])  # the last real token
