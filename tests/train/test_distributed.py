"""2 CPU processes (gloo) with batch b each must train like 1 process with batch 2b."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from llmlab.model import Transformer
from llmlab.train.loop import train
from llmlab.train.losses import lm_loss

from .conftest import batches, tiny_model_config, token_stream, train_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_root: str, modes: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for mode in modes:
            cfg = train_cfg(steps=8, batch_size=4, distributed=mode, save_every=4)
            torch.manual_seed(0)
            model = Transformer(tiny_model_config())
            train(
                model,
                cfg,
                os.path.join(out_root, mode),
                batches(token_stream(), cfg, rank=rank, world_size=world),
                lm_loss,
                verbose=False,
            )
    finally:
        dist.destroy_process_group()


def _losses(path) -> list[float]:
    return [r["loss"] for r in map(json.loads, open(path).read().splitlines()) if "loss" in r]


@pytest.mark.timeout(180)
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    cfg = train_cfg(steps=8, batch_size=8)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    train(model, cfg, tmp_path / "single", batches(token_stream(), cfg), lm_loss, verbose=False)
    single = _losses(tmp_path / "single" / "metrics.jsonl")

    # fork: the children inherit the imported modules instead of re-importing torch (seconds each)
    mp.start_processes(
        _worker,
        args=(2, _free_port(), str(tmp_path), ["ddp", "fsdp"]),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    for mode in ("ddp", "fsdp"):
        both = _losses(tmp_path / mode / "metrics.jsonl")
        assert len(both) == len(single) == 8
        for a, b in zip(both, single):
            assert abs(a - b) < 1e-5, (mode, both, single)
        # Rank 0 wrote a full (unsharded) checkpoint.
        state = torch.load(tmp_path / mode / "train_state.pt", weights_only=True)
        assert state["step"] == 8 and state["model"]["tok_emb.weight"].shape == (61, 32)
