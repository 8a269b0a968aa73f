"""SFT's loss on midtraining batches: ours (`llmlab.train.sft.sft_loss`, the LM head on the trained
positions only) against the full-logits loss it replaced (the anchor: the LM head on every position,
then `F.cross_entropy` with the prompt's targets ignored), forward + backward, in the same run.

The batches are the CPU demo's: its model shape (tiny preset, vocab 2048, context 512), its
midtraining conversations (recipes/cpu-demo.toml's [midtrain] mix, 8 a step in 4 micro-batches by
length); two thirds of their positions are prompt, which the loss never reads. Both losses are
checked equal first; the times interleave the two, --rounds rounds of --steps steps each, and the
lines to read are each one's ms per step and the ratio.

    python benchmarks/sft_loss.py                   # 2 threads
    python benchmarks/sft_loss.py --threads 1 --rounds 2
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()

    import torch

    from llmlab.cli import flush_subnormals
    from llmlab.config import load_recipe
    from llmlab.data.chat import load_conversations, tokenize_conversations
    from llmlab.data.chat_batches import IGNORE_INDEX, ChatBatches
    from llmlab.model import Transformer
    from llmlab.model.config import preset
    from llmlab.tokenizer import Tokenizer
    from llmlab.train.losses import cross_entropy
    from llmlab.train.sft import sft_loss

    flush_subnormals()
    torch.set_num_threads(args.threads)
    recipe = load_recipe("recipes/cpu-demo.toml", ["midtrain.conversations=400"])
    m = recipe.midtrain
    convs = load_conversations("builtin:midtrain", seed=m.seed, midtrain=m)
    texts = [msg["content"] for c in convs[:200] for msg in c.messages]
    tok = Tokenizer.train(texts, recipe.data.vocab_size)
    seqs = tokenize_conversations(tok, convs, max_len=513, truncate="drop")
    batches = ChatBatches(seqs, m.batch_size, 512, False, 0, tok.special_tokens["<|end|>"], m.micro_batches)
    torch.manual_seed(0)
    model = Transformer(preset("tiny", vocab_size=tok.vocab_size, context=512))

    def full_logits_loss(model, batch):
        logits = model(batch["ids"])
        return cross_entropy(logits, batch["targets"], ignore_index=IGNORE_INDEX, reduction="sum"), None, None

    def step_ms(loss_fn, first: int) -> float:
        t = time.perf_counter()
        for step in range(first, first + args.steps):
            for micro in range(m.micro_batches):
                loss_fn(model, batches.get(step, micro))[0].backward()
        model.zero_grad(set_to_none=True)
        return (time.perf_counter() - t) / args.steps * 1000

    batch = batches.get(0, 0)
    with torch.no_grad():
        ours, theirs = sft_loss(model, batch)[0], full_logits_loss(model, batch)[0]
    kept = int((batch["targets"] != IGNORE_INDEX).sum())
    print(
        f"{args.threads} threads, torch {torch.__version__}; a micro-batch of {batch['ids'].numel()} "
        f"positions, {kept} trained; loss ours {float(ours):.4f}, full logits {float(theirs):.4f}"
    )
    step_ms(sft_loss, 0), step_ms(full_logits_loss, 0)  # warm-up
    t_ours, t_theirs = [], []
    for r in range(args.rounds):
        first = (r + 1) * args.steps
        t_ours.append(step_ms(sft_loss, first))
        t_theirs.append(step_ms(full_logits_loss, first))
    ours_ms, theirs_ms = sum(t_ours) / len(t_ours), sum(t_theirs) / len(t_theirs)
    print(f"ours (LM head on trained positions)  {ours_ms:8.1f} ms/step forward + backward")
    print(f"full logits + cross_entropy          {theirs_ms:8.1f} ms/step")
    print(f"ratio full / ours                    {theirs_ms / ours_ms:8.3f}x")


if __name__ == "__main__":
    main()
