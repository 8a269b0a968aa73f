"""Alignment throughput on CPU: our DPO and GRPO against TRL's trainers on the same weights.

One tiny llmlab chat model (random weights, a tokenizer trained on the arithmetic task) is saved and
exported to a HF Llama directory; both sides start from those weights in fp32 with the same thread
count.

    DPO:  ours (`llmlab.align.dpo_train.dpo_on_pairs`) vs TRL `DPOTrainer`
          (precompute_ref_log_probs=True) on the same steps × batch arithmetic pairs (one epoch, no
          held-out set on either side): completion tokens trained per second of the train call,
          which on both sides is the reference log-prob pass, the steps and one final checkpoint
          (model + optimizer state); loading and tokenising come before it on both sides.
    GRPO: ours (`llmlab.align.grpo_train.grpo`, rollouts through our engine) vs TRL `GRPOTrainer`
          (HF generate) with the same k, batch of prompts, max_new_tokens and steps: seconds per
          step (rollouts + update).

    python benchmarks/align_cpu.py                                   # defaults
    python benchmarks/align_cpu.py --d-model 32 --steps 2 --k 2      # a dry run

Each side is timed once over its whole train call (start-up included, so use enough steps); the
one-off costs of a process (importing torch._dynamo via the first optimizer and
torch.distributed.checkpoint, the loop's CPU matmul-peak measurement for MFU) are paid before either
side runs. On a shared machine compare the ratio lines only, or count CPU seconds
(`--threads 1 --clock cpu`), which other processes barely move.
The targets of issue 14: DPO ≥ 1.5× TRL's tokens/s, GRPO ≥ 2× faster per step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

CLOCK = time.perf_counter  # --clock cpu: time.process_time


def warm_up() -> None:
    """What our first run in a process would otherwise pay alone: lazy imports of the optimizer and
    the checkpoint code, and the loop's one matmul-peak measurement for MFU (cached per process
    and thread count; TRL measures none)."""
    import torch.distributed.checkpoint.state_dict

    from llmlab.train.mfu import PeakFlops

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    PeakFlops("cpu")


def build(tmp: Path, d_model: int, layers: int, context: int):
    from llmlab.data.synthetic import conversations
    from llmlab.model import ModelConfig, Transformer
    from llmlab.model.hf import export_hf
    from llmlab.model.load import save_model_dir
    from llmlab.tokenizer import Tokenizer

    texts = [m["content"] for c in conversations("arithmetic") for m in c]
    tok = Tokenizer.train(texts, 300)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, n_layer=layers, d_model=d_model, n_head=4, n_kv_head=2,
                      d_ff=4 * d_model, context=context)  # fmt: skip
    model = Transformer(cfg)
    gen = {"chat_template": "llmlab-v1", "stop_tokens": ["<|end|>", "<|bos|>"]}
    save_model_dir(tmp / "ours", model, tok, generation=gen)
    export_hf(model, tok, tmp / "hf", generation=gen)
    return tok


def recipe(*sets):
    from llmlab.config import load_recipe

    return load_recipe(None, ["train.device=cpu", "train.log_every=1000", "train.save_every=0", *sets])


def dpo_ours(tmp: Path, args) -> tuple[float, float]:
    from llmlab.align.common import load_policy
    from llmlab.align.data import builtin_preferences, tokenize_pairs
    from llmlab.align.dpo_train import dpo_on_pairs

    rec = recipe(f"dpo.steps={args.steps}", f"dpo.batch_size={args.batch}")
    model, tok = load_policy(tmp / "ours", "DPO's policy")
    pairs = tokenize_pairs(tok, builtin_preferences("arithmetic")[: args.steps * args.batch], 10_000, False)
    t0 = CLOCK()
    s = dpo_on_pairs(rec, model, tok, pairs, [], tmp / "dpo_out", verbose=False)
    return s["train_tokens"], CLOCK() - t0


def pair_records(tok, n: int) -> tuple[list[dict], int]:
    """Conversational records for TRL and the completion tokens they hold (both sides)."""
    from llmlab.align.data import builtin_preferences, tokenize_pairs

    prefs = builtin_preferences("arithmetic")[:n]
    seqs = tokenize_pairs(tok, prefs, 10_000, verbose=False)
    tokens = sum(len(s.chosen) + len(s.rejected) for s in seqs)
    return [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in prefs], tokens


def dpo_trl(tmp: Path, tok, args) -> tuple[float, float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    n = args.steps * args.batch
    records, tokens = pair_records(tok, n)
    cfg = DPOConfig(output_dir=str(tmp / "trl_dpo"), per_device_train_batch_size=args.batch, max_steps=args.steps,
                    learning_rate=1e-4, logging_steps=1000, report_to=[], save_strategy="steps",
                    save_steps=args.steps, use_cpu=True, precompute_ref_log_probs=True,
                    dataloader_num_workers=0)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tmp / "hf")
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(records),
                         processing_class=AutoTokenizer.from_pretrained(tmp / "hf"))  # fmt: skip
    t0 = CLOCK()
    trainer.train()
    return tokens, CLOCK() - t0


def grpo_ours(tmp: Path, args) -> float:
    from llmlab.align.grpo_train import grpo

    rec = recipe(f"grpo.steps={args.steps}", f"grpo.k={args.k}", f"grpo.batch_size={args.batch}",
                 f"grpo.max_new_tokens={args.new}")  # fmt: skip
    import llmlab.train.loop as loop

    real = loop.train
    spent = []

    def timed(*a, **kw):  # the loop alone (what the summary's wall_s covers), on the chosen clock
        t0 = CLOCK()
        out = real(*a, **kw)
        spent.append(CLOCK() - t0)
        return out

    loop.train = timed
    try:
        grpo(rec, tmp / "ours", tmp / "grpo_out", verbose=False)
    finally:
        loop.train = real
    return spent[0] / args.steps


def grpo_trl(tmp: Path, args) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from llmlab.data import synthetic

    exs = synthetic.examples("arithmetic")[: args.steps * args.batch]
    records = [{"prompt": [{"role": "user", "content": e.prompt}], "answer": e.answer} for e in exs]

    def exact(completions, answer, **kw):
        return [float(c[0]["content"].strip() == a) for c, a in zip(completions, answer)]

    cfg = GRPOConfig(output_dir=str(tmp / "trl_grpo"), per_device_train_batch_size=args.batch * args.k,
                     num_generations=args.k, max_completion_length=args.new, max_steps=args.steps,
                     learning_rate=5e-5, logging_steps=1000, report_to=[], save_strategy="no", use_cpu=True,
                     dataloader_num_workers=0)  # fmt: skip
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tmp / "hf"), reward_funcs=[exact], args=cfg,
                          train_dataset=Dataset.from_list(records),
                          processing_class=AutoTokenizer.from_pretrained(tmp / "hf"))  # fmt: skip
    t0 = CLOCK()
    trainer.train()
    return (CLOCK() - t0) / args.steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=8, help="DPO pairs per step; GRPO prompts per step")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--new", type=int, default=8, help="GRPO max_new_tokens")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: this process's CPU seconds (with --threads 1, steadier on a busy machine)")  # fmt: skip
    args = p.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        tok = build(tmp, args.d_model, args.layers, args.context)
        warm_up()
        lines = []
        tok_o, s_o = dpo_ours(tmp, args)
        try:
            tok_t, s_t = dpo_trl(tmp, tok, args)
            lines.append(f"DPO  ours {tok_o / s_o:,.0f} tok/s   TRL {tok_t / s_t:,.0f} tok/s   ratio "
                         f"{(tok_o / s_o) / (tok_t / s_t):.2f}x (target >= 1.5x)")  # fmt: skip
        except Exception as e:  # an oracle that cannot run here is reported, not fatal
            lines.append(
                f"DPO  ours {tok_o / s_o:,.0f} tok/s   TRL failed: {type(e).__name__}: {str(e)[:200]}"
            )
        g_o = grpo_ours(tmp, args)
        try:
            g_t = grpo_trl(tmp, args)
            lines.append(
                f"GRPO ours {g_o:.3f} s/step   TRL {g_t:.3f} s/step   speed-up {g_t / g_o:.2f}x (target >= 2x)"
            )
        except Exception as e:
            lines.append(f"GRPO ours {g_o:.3f} s/step   TRL failed: {type(e).__name__}: {str(e)[:200]}")
    print(
        f"threads {torch.get_num_threads()}, d_model {args.d_model}, layers {args.layers}, steps {args.steps}, "
        f"{args.clock} clock"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
