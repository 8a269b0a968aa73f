"""Steps to copy a question's operands into a tool call: Muon (ours, `train.optimizer = "muon"`)
against AdamW (the anchor), in the same run on the same conversations.

Both optimizers train the same starting model (a run's pretrained model, or --scratch: its shape,
freshly initialised) for --steps steps of --rows tool-use conversations, 5 questions each, one a row
(recipes/cpu-demo.toml's midtraining), loss on the assistant's tokens; AdamW at 3e-3 on everything, or Muon at 0.02 on the hidden matrices and AdamW at 3e-3
on the rest, both constant after 20 warm-up steps, gradients clipped to 1. Every --every steps: the
call's digits teacher-forced on the held-out tool-use questions (`<|tool_call|>…"expression": "`
then the right expression: the fraction of its digits predicted; chance ≈ 0.1). The line to read is
the first step at which each reaches --target, and the ratio.

    python benchmarks/optimizer_copy.py --model runs/tools/pretrain                # 1,000 steps each: ~45 min at 1 thread, beside other jobs
    python benchmarks/optimizer_copy.py --model runs/tools/pretrain --steps 100    # a quick look
"""

from __future__ import annotations

import argparse
import time


def held_out_calls(tok) -> list[tuple[list[int], list[int], list[bool]]]:
    """(prompt + call prefix, the expression's tokens, which of them are digits) per held-out question."""
    from llmlab.data import tool_use
    from llmlab.data.synthetic import examples

    prefix = tok.encode(
        '<|tool_call|>{"name": "calculator", "arguments": {"expression": "', allowed_special="all"
    )
    out = []
    for ex in examples("tool_use", "test"):
        prompt = tok.render_for_generation([{"role": "user", "content": ex.prompt}], tools=[tool_use.SCHEMA])
        want = tok.encode(tool_use.expression_for(ex))
        out.append((prompt + prefix, want, [tok.decode([w]).isdigit() for w in want]))
    return out


def call_digits(model, probes) -> float:
    import torch

    right = total = 0
    model.eval()
    with torch.no_grad():
        for prompt, want, digit in probes:
            pred = model(torch.tensor([prompt + want]))[0, len(prompt) - 1 : -1].argmax(-1).tolist()
            right += sum(p == w for p, w, d in zip(pred, want, digit) if d)
            total += sum(digit)
    model.train()
    return right / total


def batches(tok, steps: int, rows: int) -> list[dict]:
    """steps × `rows` tool-use conversations, one a row, padded (as `midtrain.pack = false`), the loss
    on the assistant's tokens (as midtraining): every step its own conversations."""
    from llmlab.data import midtrain
    from llmlab.data.chat_batches import pad_batch
    from llmlab.tokenizer.chat import render_chat

    weights = {f: 0.0 for f in midtrain.FAMILIES} | {"tool_use": 1.0}
    convs = midtrain.conversations(steps * rows, 0, weights, questions=5)
    pad_id = tok.special_tokens["<|end|>"]
    return [
        pad_batch([render_chat(tok, c) for c in convs[i : i + rows]], pad_id)
        for i in range(0, len(convs), rows)
    ]


def run(name: str, model, data, probes, args) -> int | None:
    import torch
    import torch.nn.functional as F

    from llmlab.train.optim import make_optimizers

    opts = make_optimizers(model, 3e-3, 0.0, optimizer=name, muon_lr=0.02)
    t0, reached = time.perf_counter(), None
    for step in range(1, args.steps + 1):
        for g in (g for o in opts for g in o.param_groups):
            g["lr"] = 3e-3 * min(1.0, step / 20) * g.get("lr_scale", 1.0)
        batch = data[step - 1]
        F.cross_entropy(
            model(batch["ids"]).flatten(0, 1), batch["targets"].flatten(), ignore_index=-100
        ).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        if step % args.every == 0:
            acc = call_digits(model, probes)
            print(
                f"  {name:<6} step {step:>4}: call digits {acc:.3f}  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            if reached is None and acc >= args.target:
                reached = step
                if not args.full:
                    break
    return reached


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model directory (a run's pretrain/, say)")
    ap.add_argument("--scratch", action="store_true", help="its shape, freshly initialised")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=8, help="conversations (packed rows) per step")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--full", action="store_true", help="keep going after the target")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from llmlab.model import Transformer
    from llmlab.model.load import load_model_dir

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as `train()` does (benchmarks/flush_denormal.py)
    model, tok = load_model_dir(args.model)
    start = Transformer(model.cfg).state_dict() if args.scratch else model.state_dict()
    data = batches(tok, args.steps, args.rows)
    probes = held_out_calls(tok)
    print(
        f"{args.model}{' (fresh weights)' if args.scratch else ''}: {len(probes)} held-out questions, "
        f"{args.rows} conversations (× 5 questions) a step"
    )
    reached = {}
    for name in ("adamw", "muon"):
        model.load_state_dict(start)
        torch.manual_seed(0)
        reached[name] = run(name, model, data, probes, args)
    say = {k: (f"step {v}" if v else f"not by step {args.steps}") for k, v in reached.items()}
    ratio = (
        f"{reached['adamw'] / reached['muon']:.2f}×"
        if reached["adamw"] and reached["muon"]
        else f"≥ {args.steps / reached['muon']:.2f}×"
        if reached["muon"]
        else "n/a"
    )
    print(
        f"call digits ≥ {args.target}: AdamW {say['adamw']}, Muon {say['muon']}; steps ratio (AdamW / Muon): {ratio}"
    )


if __name__ == "__main__":
    main()
