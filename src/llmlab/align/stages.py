"""The speedrun's alignment stages and their report sections, after SFT:

    reward        a Bradley–Terry reward model on preference pairs (arithmetic: right vs wrong answer)
    dpo           DPO of the SFT model on the same pairs
    rlhf          PPO of the SFT model against the reward model (KL-penalised)
    grpo          GRPO of the SFT model with the exact-answer reward
    aligned_eval  every model on the same held-out arithmetic questions: accuracy and reward score

Each trains from the SFT model directory; `[align] stages = false` leaves all five out.
"""

from __future__ import annotations

from llmlab.pipeline import Stage, StageContext
from llmlab.report import fmt
from llmlab.report.render import Block, Heading, Para, Table
from llmlab.train.report import training_result

ON = lambda recipe: recipe.align.stages  # noqa: E731


def _sft(ctx: StageContext):
    return ctx.output("sft").parent


def run_reward(ctx: StageContext) -> dict:
    from llmlab.align.reward import train_reward

    out = ctx.dir("reward")
    res = training_result(
        ctx, out, train_reward(ctx.recipe, _sft(ctx), out, resume=ctx.resume, verbose=ctx.verbose)
    )
    res["summary"] = (
        f"held-out accuracy {fmt.pct(res.get('init_val_accuracy'))} → {fmt.pct(res.get('val_accuracy'))}"
    )
    return res


def run_dpo(ctx: StageContext) -> dict:
    from llmlab.align.dpo_train import dpo

    out = ctx.dir("dpo")
    res = training_result(ctx, out, dpo(ctx.recipe, _sft(ctx), out, resume=ctx.resume, verbose=ctx.verbose))
    res["summary"] = f"held-out loss {fmt.num(res.get('init_val_loss'))} → {fmt.num(res.get('val_loss'))}"
    return res


def run_rlhf(ctx: StageContext) -> dict:
    from llmlab.align.ppo_train import rlhf

    out = ctx.dir("rlhf")
    reward_dir = ctx.output("reward").parent
    s = rlhf(ctx.recipe, _sft(ctx), reward_dir, out, resume=ctx.resume, verbose=ctx.verbose)
    res = training_result(ctx, out, s)
    h = res.get("history") or [[float("nan")] * 4]
    res["summary"] = (
        f"reward-model score {fmt.num(h[0][1])} → {fmt.num(h[-1][1])}, KL {fmt.num(h[-1][0])} nats"
    )
    return res


def run_grpo(ctx: StageContext) -> dict:
    from llmlab.align.grpo_train import grpo

    out = ctx.dir("grpo")
    res = training_result(ctx, out, grpo(ctx.recipe, _sft(ctx), out, resume=ctx.resume, verbose=ctx.verbose))
    res["summary"] = f"held-out accuracy {fmt.pct(res.get('init_accuracy'))} → {fmt.pct(res.get('accuracy'))}"
    return res


def run_aligned_eval(ctx: StageContext) -> dict:
    """Greedy answers of every model to the same held-out questions: exact accuracy, and the reward
    model's mean score of those answers (the proxy the RL stages optimised)."""
    import torch

    import llmlab
    from llmlab.align.grpo_train import exact_accuracy
    from llmlab.align.rollout import load_prompts
    from llmlab.generate import Engine, SamplingParams

    limit = ctx.recipe.align.eval_limit
    rm, tok = llmlab.load(ctx.output("reward").parent) if "reward" in ctx.results else (None, None)
    rows = {}
    for name in ("sft", "dpo", "rlhf", "grpo"):
        if name not in ctx.results:
            continue
        model, tok = llmlab.load(ctx.output(name).parent)
        prompts = load_prompts(tok, "builtin:arithmetic", "test")[:limit]
        acc = exact_accuracy(model, tok, prompts, 8)
        score = None
        if rm is not None:
            comps = Engine(model, tok).generate_ids(
                [p.ids for p in prompts], SamplingParams(temperature=0, max_new_tokens=8)
            )
            end = tok.special_tokens["<|end|>"]
            seqs = [
                p.ids + c.token_ids + ([end] if c.finish_reason == "stop" else [])
                for p, c in zip(prompts, comps)
            ]
            with torch.no_grad():
                score = float(sum(float(rm(torch.tensor([s]))) for s in seqs) / len(seqs))
        rows[name] = {"accuracy": acc, "score": score}
    best = max(rows, key=lambda k: rows[k]["accuracy"]) if rows else None
    return {
        "models": rows,
        "questions": limit,
        "summary": f"best held-out accuracy: {best}" if best else "no models",
    }


def run_frontier(ctx: StageContext) -> dict:
    from llmlab.align.frontier import frontier
    from llmlab.data.shards import load_shards

    shards = load_shards(ctx.results["pretrain"]["shards"])
    base = ctx.output("pretrain").parent
    res = frontier(ctx.recipe, base, shards.train, shards.val, ctx.dir("frontier"), ctx.verbose)
    over = res["overopt"]
    res["summary"] = f"{len(res['points'])} policies placed; {res['pairs']} pairs" + (
        f"; KL-free PPO proxy {fmt.num(over[0][0])} → {fmt.num(over[-1][0])}, r* {fmt.num(over[0][1])} → "
        f"{fmt.num(over[-1][1])}"
        if over
        else ""
    )
    return res


def section_frontier(r: dict, ctx) -> list[Block]:
    from llmlab.align.frontier import plot_frontier, plot_overopt
    from llmlab.report.render import Figure

    rows = [
        [p["method"], fmt.num(p["param"], "g"), fmt.num(p["kl"]), fmt.num(p["reward"]),
         fmt.num(p.get("rank_corr")) if p["method"] == "dpo" else ""]
        for p in r.get("points", [])
    ]  # fmt: skip
    blocks: list[Block] = [
        Heading("Reward–KL frontier and over-optimisation"),
        Para(f"Base-model samples on Shakespeare prefixes, labelled by a lexicon sentiment r* ({r.get('pairs')} "
             f"pairs); each policy placed by its KL to the base model and mean r* on {r.get('held_out_prompts')} "
             "held-out prefixes."),
        Table(["method", "β", "KL (nats)", "mean r*", "rank corr. of β·log π/π_ref with r*"], rows),
    ]  # fmt: skip
    png = plot_frontier(r.get("points", []), ctx.fig_dir / "frontier.png")
    if png:
        blocks.append(Figure(png, "mean true reward against KL to the reference"))
    png = plot_overopt(r.get("overopt", []), ctx.fig_dir / "overopt.png")
    if png:
        blocks.append(
            Figure(png, "PPO without a KL penalty: the proxy score and the true reward per rollout batch")
        )
    return blocks


def headline_frontier(r: dict, results: dict) -> list[list]:
    ps = [p for p in r.get("points", []) if p["method"] != "base"]
    best = max(ps, key=lambda p: p["reward"]) if ps else None
    return (
        [["best r* on the frontier", fmt.num(best["reward"]), f"{best['method']} β={best['param']:g}"]]
        if best
        else []
    )


def section_reward(r: dict, ctx) -> list[Block]:
    return [
        Heading("Reward model"),
        Para("Bradley–Terry on preference pairs: −log σ(r(x, y_c) − r(x, y_r)), r = w · h(last token) on the SFT trunk."),
        Table(["quantity", "value"], [
            ["training pairs", fmt.count(r.get("pairs"))], ["held-out pairs", fmt.count(r.get("val_pairs"))],
            ["held-out accuracy before", fmt.pct(r.get("init_val_accuracy"))],
            ["held-out accuracy after", fmt.pct(r.get("val_accuracy"))], ["steps", fmt.count(r.get("steps"))],
        ]),
    ]  # fmt: skip


def section_dpo(r: dict, ctx) -> list[Block]:
    return [
        Heading("DPO"),
        Para("−log σ(β(log π/π_ref(y_c) − log π/π_ref(y_r))); at the start π = π_ref and the loss is ln 2 = 0.693."),
        Table(["quantity", "value"], [
            ["held-out loss before", fmt.num(r.get("init_val_loss"))], ["held-out loss after", fmt.num(r.get("val_loss"))],
            ["implicit-reward accuracy after", fmt.pct(r.get("val_accuracy"))],
            ["implicit-reward margin after", fmt.num(r.get("val_margin"))], ["steps", fmt.count(r.get("steps"))],
        ]),
    ]  # fmt: skip


def section_rlhf(r: dict, ctx) -> list[Block]:
    h = r.get("history") or []
    rows = [
        [i + 1, fmt.num(x[1]), fmt.num(x[0]), fmt.num(x[2]), fmt.num(x[3], ".4f")] for i, x in enumerate(h)
    ]
    return [
        Heading("RLHF with PPO"),
        Para(
            "Per rollout batch: the reward model's mean score, the KL to the reference (Σ over tokens), "
            "score − β·KL, and β."
        ),
        Table(["rollout batch", "score", "KL (nats)", "score − β·KL", "β"], rows),
    ]


def _reward_curve(rewards: list[float], path) -> list[Block]:
    from llmlab.report.plots import pyplot, save_png, style
    from llmlab.report.render import Figure

    if not rewards:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    ax.plot(range(1, len(rewards) + 1), rewards, "o-", color="#4c72b0", ms=3)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward of the k samples")
    style(ax)
    fig.tight_layout()
    return [Figure(save_png(fig, path), "GRPO: mean exact-answer reward of each step's rollouts")]


def section_grpo(r: dict, ctx) -> list[Block]:
    rewards = r.get("rewards") or []
    return [*_grpo_blocks(r, rewards), *_reward_curve(rewards, ctx.fig_dir / "grpo_reward.png")]


def _grpo_blocks(r: dict, rewards: list[float]) -> list[Block]:
    return [
        Heading("GRPO on arithmetic"),
        Para("k samples per prompt, reward 1 for the exact answer, advantages relative to the group."),
        Table(["quantity", "value"], [
            ["held-out accuracy before (greedy)", fmt.pct(r.get("init_accuracy"))],
            ["held-out accuracy after (greedy)", fmt.pct(r.get("accuracy"))],
            ["mean reward, first / last step", f"{fmt.num(rewards[0] if rewards else None)} / {fmt.num(rewards[-1] if rewards else None)}"],
            ["steps", fmt.count(r.get("steps"))],
        ]),
    ]  # fmt: skip


def section_aligned(r: dict, ctx) -> list[Block]:
    rows = [[k, fmt.pct(v["accuracy"]), fmt.num(v["score"])] for k, v in r.get("models", {}).items()]
    return [
        Heading("Aligned models, side by side"),
        Para(f"Greedy answers to the same {r.get('questions')} held-out arithmetic questions."),
        Table(["model", "exact accuracy", "reward-model score"], rows),
    ]


def headline_reward(r: dict, results: dict) -> list[list]:
    return [
        [
            "reward model held-out accuracy",
            fmt.pct(r.get("val_accuracy")),
            f"before {fmt.pct(r.get('init_val_accuracy'))}",
        ]
    ]


def headline_dpo(r: dict, results: dict) -> list[list]:
    return [
        [
            "DPO held-out loss",
            fmt.num(r.get("val_loss")),
            f"ln 2 = {fmt.num(r.get('init_val_loss'))} at the start",
        ]
    ]


def headline_rlhf(r: dict, results: dict) -> list[list]:
    h = r.get("history") or [[None] * 4]
    return [["PPO reward-model score", fmt.num(h[-1][1]), f"from {fmt.num(h[0][1])}, KL {fmt.num(h[-1][0])}"]]


def headline_grpo(r: dict, results: dict) -> list[list]:
    return [["GRPO held-out accuracy", fmt.pct(r.get("accuracy")), f"SFT {fmt.pct(r.get('init_accuracy'))}"]]


def headline_aligned(r: dict, results: dict) -> list[list]:
    m = r.get("models", {})
    return [[f"{k} held-out arithmetic", fmt.pct(v["accuracy"]), ""] for k, v in m.items() if k != "sft"]


REWARD = Stage("reward", "reward model on preference pairs", run_reward, section=section_reward, headline=headline_reward,
               reads=("reward", "train"), files=("reward.data",), needs=("sft",), enabled=ON)  # fmt: skip
DPO = Stage("dpo", "DPO on preference pairs", run_dpo, section=section_dpo, headline=headline_dpo, reads=("dpo", "train"),
            files=("dpo.data",), needs=("sft",), enabled=ON)  # fmt: skip
RLHF = Stage("rlhf", "RLHF: PPO against the reward model", run_rlhf, section=section_rlhf, headline=headline_rlhf,
             reads=("rlhf", "train"), needs=("sft", "reward"), enabled=ON)  # fmt: skip
GRPO = Stage("grpo", "GRPO with the exact-answer reward", run_grpo, section=section_grpo, headline=headline_grpo,
             reads=("grpo", "train"), needs=("sft",), enabled=ON)  # fmt: skip
ALIGNED_EVAL = Stage("aligned_eval", "the aligned models on held-out arithmetic", run_aligned_eval,
                     section=section_aligned, headline=headline_aligned, reads=("align",), needs=("sft",),
                     uses=("reward", "dpo", "rlhf", "grpo"), enabled=ON)  # fmt: skip
FRONTIER = Stage("frontier", "the reward–KL frontier and over-optimisation (sentiment)", run_frontier,
                 section=section_frontier, headline=headline_frontier, reads=("align", "dpo", "rlhf", "reward", "train"),
                 needs=("pretrain",), enabled=lambda recipe: recipe.align.stages and recipe.align.frontier)  # fmt: skip
ALIGN_STAGES = [REWARD, DPO, RLHF, GRPO, ALIGNED_EVAL, FRONTIER]
