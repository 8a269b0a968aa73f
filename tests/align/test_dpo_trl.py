"""`dpo_loss` equals TRL 1.16's `DPOTrainer._compute_loss` for every loss type (float64, 1e-6).

TRL's method is private, so it is called unbound on a stub trainer whose model returns precomputed
per-token log-probs (the fused-LM-head outputs TRL reads) and with precomputed reference log-probs."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from llmlab.align.dpo import LOSS_TYPES, dpo_loss

trl_dpo = pytest.importorskip(
    "trl.trainer.dpo_trainer", reason="trl==1.16.0 not installed (pip install '.[dev]')"
)


def _batch(pairs=6, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = 2 * pairs
    prompt = torch.randint(1, 4, (b,), generator=g)
    comp = torch.randint(1, length - 3, (b,), generator=g)
    pos = torch.arange(length)
    completion_mask = ((pos >= prompt[:, None]) & (pos < (prompt + comp)[:, None])).long()
    attention_mask = (pos < (prompt + comp)[:, None]).long()
    shift = completion_mask[:, 1:].double()
    per_token = -torch.rand(b, length - 1, generator=g, dtype=torch.float64) * 3 * shift
    ref = per_token + 0.4 * torch.randn(b, length - 1, generator=g, dtype=torch.float64) * shift
    return completion_mask, attention_mask, per_token, ref.sum(1)


def _trl(loss_types, beta, eps, per_token, ref_logps, completion_mask, attention_mask, weights=None):
    pairs = per_token.shape[0] // 2
    outputs = SimpleNamespace(
        log_probs=per_token,
        entropy=torch.zeros_like(per_token),
        mean_logits=torch.zeros_like(per_token),
        is_top1=torch.zeros_like(per_token, dtype=torch.bool),
    )
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=loss_types, loss_weights=weights or [1.0] * len(loss_types), beta=beta, label_smoothing=eps,
        args=SimpleNamespace(discopop_tau=0.05), use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    inputs = {
        "input_ids": torch.zeros_like(completion_mask),
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_logps[:pairs],
        "ref_rejected_logps": ref_logps[pairs:],
    }
    loss = trl_dpo.DPOTrainer._compute_loss(stub, lambda **kw: outputs, inputs, False)
    return loss, {k: v[-1] for k, v in stub._metrics["train"].items()}


@pytest.mark.parametrize("loss_type", [*LOSS_TYPES, ("sigmoid", "sft")])
def test_dpo_loss_equals_trl(loss_type):
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    eps = 0.1 if loss_type in ("robust", "exo_pair", "aot", "aot_unpaired") else 0.0
    completion_mask, attention_mask, per_token, ref_logps = _batch()
    weights = [1.0, 0.5] if len(types) == 2 else None
    leaf = per_token.requires_grad_()
    per_token = leaf * completion_mask[:, 1:]  # what a model gives: 0 (no gradient) off the completion
    theirs, their_metrics = _trl(
        types, 0.3, eps, per_token, ref_logps, completion_mask, attention_mask, weights
    )
    (their_grad,) = torch.autograd.grad(theirs, leaf, retain_graph=True)
    pairs = per_token.shape[0] // 2
    logps, lengths = per_token.sum(1), completion_mask.sum(1)
    ours, metrics = dpo_loss(
        logps[:pairs], logps[pairs:], ref_logps[:pairs], ref_logps[pairs:], beta=0.3, loss_type=types,
        label_smoothing=eps, chosen_lengths=lengths[:pairs], rejected_lengths=lengths[pairs:], loss_weights=weights,
    )  # fmt: skip
    (our_grad,) = torch.autograd.grad(ours, leaf)
    assert ours.dtype == torch.float64 and abs(ours.item() - theirs.item()) < 1e-6
    torch.testing.assert_close(our_grad, their_grad, atol=1e-6, rtol=0)
    for k, v in metrics.items():
        assert abs(float(v) - their_metrics[k]) < 1e-6, k


def test_sigmoid_loss_is_ln2_at_initialisation():
    logps = -torch.rand(8, dtype=torch.float64) * 20
    loss, m = dpo_loss(logps[:4], logps[4:], logps[:4].clone(), logps[4:].clone(), beta=0.1)
    assert abs(float(loss) - math.log(2)) < 1e-12
    assert float(m["rewards/margins"]) == 0.0 and float(m["rewards/accuracies"]) == 0.0  # strict >


def test_a_full_trl_dpo_trainer_on_our_hf_export_gives_our_loss_and_gradients(tmp_path):
    """TRL's DPOTrainer (its tokenisation, collator, fused LM head, precomputed reference) on the HF
    export of a tiny llmlab model; our Transformer + `dpo_loss` on the very batch it builds."""
    datasets = pytest.importorskip("datasets")
    transformers = pytest.importorskip("transformers")
    from llmlab.model.hf import export_hf, hf_name
    from llmlab.model.logprobs import sequence_logprobs

    from .conftest import tiny_chat_model

    model, tok = tiny_chat_model(seed=4)
    export_hf(
        model, tok, tmp_path / "hf", generation={"chat_template": "llmlab-v2", "stop_tokens": ["<|end|>"]}
    )
    recs = [
        {"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
         "chosen": [{"role": "assistant", "content": str(a + b)}],
         "rejected": [{"role": "assistant", "content": f"{a + b + 1} or so"}]}
        for a, b in [(1, 2), (3, 4), (5, 6), (2, 2)]
    ]  # fmt: skip
    cfg = trl_dpo.DPOConfig(output_dir=str(tmp_path / "o"), per_device_train_batch_size=4, report_to=[], use_cpu=True,
                            precompute_ref_log_probs=True, beta=0.1, dataloader_num_workers=0)  # fmt: skip
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    trainer = trl_dpo.DPOTrainer(
        model=hf, args=cfg, train_dataset=datasets.Dataset.from_list(recs),
        processing_class=transformers.AutoTokenizer.from_pretrained(tmp_path / "hf"),
    )  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    ids, mask = batch["input_ids"], batch["completion_mask"]
    with torch.no_grad():
        ref = sequence_logprobs(model, ids, mask)
    # TRL precomputes its reference in other padded batches (agreeing to ~5e-4 nats); both sides
    # then use our reference forward, which equals HF's forward of this batch
    n = ref.shape[0] // 2
    theirs_ref = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    torch.testing.assert_close(ref, theirs_ref, atol=2e-3, rtol=0)
    batch["ref_chosen_logps"], batch["ref_rejected_logps"] = ref[:n], ref[n:]
    hf.train()
    theirs = trainer.compute_loss(hf, batch)
    theirs.backward()

    model.train()
    lp = sequence_logprobs(model, ids, mask)
    ours, _ = dpo_loss(lp[:n], lp[n:], ref[:n], ref[n:], beta=0.1)
    ours.backward()
    assert abs(ours.item() - theirs.item()) < 1e-5
    hf_params = dict(hf.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, hf_params[hf_name(name)].grad, atol=1e-5, rtol=1e-3)
