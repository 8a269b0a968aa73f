"""The speedrun's samples stage: text from the base model, conversations with the SFT model."""

from __future__ import annotations

from typing import Any

from llmlab.pipeline import Stage, StageContext
from llmlab.report.render import Block, Code, Heading, Para


def run(ctx: StageContext) -> dict:
    from llmlab.generate import generate

    sp = ctx.recipe.speedrun
    kw = dict(max_new_tokens=sp.max_new_tokens, temperature=sp.temperature, top_k=sp.top_k, seed=sp.seed)
    res: dict[str, Any] = {"settings": kw, "base": [], "chat": []}
    if "pretrain" in ctx.results and sp.base_prompts:
        model, tok = ctx.load_model("pretrain")
        bos = tok.special_tokens["<|bos|>"]  # every training document starts with <|bos|>
        outs = generate(model, tok, [[bos, *tok.encode_ordinary(p)] for p in sp.base_prompts], **kw)
        res["base"] = [{"prompt": p, "completion": c} for p, c in zip(sp.base_prompts, outs)]
    if "sft" in ctx.results and sp.chat_prompts:
        model, tok = ctx.load_model("sft")
        ids = [tok.render_for_generation([{"role": "user", "content": p}]) for p in sp.chat_prompts]
        outs = generate(model, tok, ids, **kw)
        res["chat"] = [{"user": p, "assistant": c.strip()} for p, c in zip(sp.chat_prompts, outs)]
    res["summary"] = f"{len(res['base'])} base samples, {len(res['chat'])} conversations"
    return res


def section(r: dict, ctx) -> list[Block]:
    blocks: list[Block] = [
        Heading("Samples"),
        Para("Settings: " + ", ".join(f"{k}={v}" for k, v in r.get("settings", {}).items())),
    ]
    if r.get("base"):
        blocks.append(Heading("Base model (text continuation)", 3))
        blocks += [Code(f"{x['prompt']}{x['completion']}") for x in r["base"]]
    if r.get("chat"):
        blocks.append(Heading("SFT model (conversations)", 3))
        blocks += [Code(f"user: {x['user']}\nassistant: {x['assistant']}") for x in r["chat"]]
    return blocks


def headline(r: dict, results: dict) -> list[list]:
    if not r.get("chat"):
        return [["samples", f"{len(r.get('base', []))} base-model texts", "-"]]
    first = r["chat"][0]
    return [[f"SFT answer to “{first['user']}”", first["assistant"][:80], "-"]]


SAMPLES = Stage(
    "samples",
    "base-model text and SFT conversations",
    run,
    section=section,
    headline=headline,
    reads=(
        "speedrun.base_prompts",
        "speedrun.chat_prompts",
        "speedrun.max_new_tokens",
        "speedrun.temperature",
        "speedrun.top_k",
        "speedrun.seed",
    ),
    needs=("pretrain",),
    uses=("sft",),
)
