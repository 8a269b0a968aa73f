"""Data parallelism under `torchrun`: DDP (gloo on CPU, NCCL on GPU) or FSDP2 (`fully_shard`).

    torchrun --nproc-per-node 8 -m llmlab pretrain --recipe recipes/gpt2-124m.toml

Every rank holds the model (DDP) or a 1/world shard of every parameter and its optimizer state
(FSDP2), runs forward/backward on its own micro-batch, and gradients are averaged:
    g = (1/W) Σ_r g_r
With equal token counts per rank that is the gradient of the global batch's mean loss, so W ranks
× batch b train exactly like 1 rank × batch W·b (up to float summation order). Rank 0 alone logs and
writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from llmlab.errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0, *, what: str = "train.device") -> torch.device:
    """ "auto" → cuda:<local_rank> if available, else mps, else cpu. A device that is unknown or not
    present here is a `UserError` naming `what` (the recipe key or CLI flag the name came from)."""
    shown = f"{what} {name}" if what.startswith("--") else f"{what}={name}"
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("mps" if mps else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{shown}: no CUDA device is available here; use auto or cpu")
        return torch.device("cuda", local_rank)
    if name == "mps":
        if not mps:
            raise UserError(f"{shown}: no MPS (Apple GPU) device is available here; use auto or cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"{what}: unknown device {name!r}; choose auto, cpu, cuda or mps")


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set), or use one that the
    caller already initialised (tests spawn processes themselves). Single process otherwise."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistInfo(rank, local, world, resolve_device(device, local))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, local, world, dev)


def wrap(model: torch.nn.Module, info: DistInfo, mode: str = "ddp") -> torch.nn.Module:
    """DDP or FSDP2 over `model` when running on more than one rank; the model itself otherwise.
    FSDP2 shards each block separately (so only one block is gathered at a time), then the root."""
    if not info.is_distributed:
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DDP(model, device_ids=ids, broadcast_buffers=False)  # RoPE tables are constants
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        inner = getattr(model, "_orig_mod", model)
        for block in getattr(inner, "blocks", []):
            fully_shard(block)
        fully_shard(inner)
        return model
    raise UserError(f"train.distributed: unknown mode '{mode}'; choose ddp or fsdp")


def set_grad_sync(model: torch.nn.Module, enabled: bool) -> None:
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
    if hasattr(model, "require_backward_grad_sync"):  # DDP
        model.require_backward_grad_sync = enabled
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(enabled)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few floats over ranks (float64, so counts of tokens stay exact)."""
    if not info.is_distributed:
        return list(values)
    dev = info.device if info.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.is_distributed:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's `obj` on every rank (e.g. a decision to stop)."""
    if not info.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(info: DistInfo) -> None:
    """Leave the process group if `setup` joined it."""
    if info.is_distributed and dist.is_initialized() and "TORCHELASTIC_RUN_ID" in os.environ:
        dist.destroy_process_group()
