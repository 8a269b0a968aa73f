"""GRPO, PPO and the reward model on 2 CPU processes (gloo DDP): each rank rolls out its own
prompts, gradients go through the DDP wrapper (so they are all-reduced), no parameter is left
without a gradient (an untied trunk's LM head), and both ranks end with the same parameters."""

from __future__ import annotations

import dataclasses
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llmlab.model import Transformer
from llmlab.model.heads import ScalarHeadModel
from llmlab.model.load import save_model_dir

from .conftest import recipe, tiny_chat_model

GRPO_SETS = ["grpo.steps=2", "grpo.k=2", "grpo.batch_size=2", "grpo.max_new_tokens=4", "grpo.lr=1e-2"]
REWARD_SETS = ["reward.steps=2", "reward.batch_size=4", "reward.lr=1e-2"]
PPO_SETS = ["rlhf.steps=1", "rlhf.batch_size=2", "rlhf.max_new_tokens=4", "rlhf.ppo_epochs=1",
            "rlhf.minibatches=2", "rlhf.lr=1e-2"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reward_on_untied_trunk(trunk_dir: str, out: str) -> None:
    from llmlab.align.common import load_policy
    from llmlab.align.data import builtin_preferences, tokenize_pairs
    from llmlab.align.reward import reward_on_pairs

    trunk, tok = load_policy(trunk_dir, "the reward model's trunk")  # untied: an LM head nobody runs
    pairs = tokenize_pairs(tok, builtin_preferences("arithmetic")[:16], 48, verbose=False)
    reward_on_pairs(recipe(*REWARD_SETS), trunk, tok, pairs, [], out, verbose=False)


def _worker(rank: int, port: int, root: str, policy: str, rm: str) -> None:
    import llmlab.align.grpo_train as gt
    import llmlab.align.ppo_train as pt
    import llmlab.train.loop as loop
    from llmlab.align.rollout import prompt_batch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    seen: dict[str, list] = {"grpo": [], "ppo": [], "reward": []}
    real_train = loop.train

    def run(name, fn):
        def batch(pool, size, index, seed):  # which prompts this rank rolls out
            out = prompt_batch(pool, size, index, seed)
            seen[name].append([p.ids for p in out])
            return out

        def train(model, *args, **kw):  # the trained parameters of this rank, after the loop
            summary = real_train(model, *args, **kw)
            torch.save(
                {k: v.detach().clone() for k, v in model.state_dict().items()}, f"{root}/{name}{rank}.pt"
            )
            return summary

        gt.prompt_batch = pt.prompt_batch = batch
        loop.train = train
        fn()

    try:
        run("grpo", lambda: gt.grpo(recipe(*GRPO_SETS), policy, f"{root}/grpo", verbose=False))
        run("ppo", lambda: pt.rlhf(recipe(*PPO_SETS), policy, rm, f"{root}/ppo", verbose=False))
        run("reward", lambda: reward_on_untied_trunk(f"{root}/untied", f"{root}/reward"))
    finally:
        loop.train = real_train
        with open(f"{root}/prompts{rank}.json", "w") as f:
            json.dump(seen, f)
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_grpo_ppo_and_reward_under_ddp_roll_out_per_rank_and_end_identical(chat_dir, tmp_path):
    trunk, tok = tiny_chat_model(seed=5)
    untied = Transformer(dataclasses.replace(trunk.cfg, tie_embeddings=False))  # an LM head V never uses
    torch.manual_seed(2)
    save_model_dir(tmp_path / "rm", ScalarHeadModel(untied, "reward"), tok)
    save_model_dir(tmp_path / "untied", untied, tok)  # a trunk for the reward model
    # (tokenizers are trained here, not in the forked children: a fork after training can hang)
    # fork: the children inherit the imported modules instead of re-importing torch (seconds each)
    mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path), str(chat_dir), str(tmp_path / "rm")), nprocs=2,
        join=True, start_method="fork",
    )  # fmt: skip
    seen = [json.loads((tmp_path / f"prompts{r}.json").read_text()) for r in (0, 1)]
    for name in ("grpo", "ppo", "reward"):
        a, b = (torch.load(tmp_path / f"{name}{r}.pt", weights_only=True) for r in (0, 1))
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=f"{name} {k}")
        if name == "reward":
            continue  # its batches come from the DPO-style epoch order (rank r: batch W·i + r)
        assert seen[0][name] and len(seen[0][name]) == len(seen[1][name])
        for p0, p1 in zip(seen[0][name], seen[1][name]):
            assert p0 != p1, f"{name}: both ranks rolled out the same prompts"


def test_rl_under_fsdp_is_a_one_line_error():
    from llmlab.align.common import check_rollout_parallelism
    from llmlab.errors import UserError
    from llmlab.train.distributed import DistInfo

    train = recipe("train.distributed=fsdp").train
    check_rollout_parallelism(train, DistInfo())  # one process: nothing is sharded
    with pytest.raises(UserError, match=r"train\.distributed=fsdp.*use train\.distributed=ddp"):
        check_rollout_parallelism(train, DistInfo(rank=0, world_size=2))
