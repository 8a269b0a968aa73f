"""The one training loop. Pretraining, SFT, the reward model, DPO, PPO and GRPO call `train` with
their own batches and loss.

    summary = train(
        model,            # nn.Module on any device (moved to the run's device here)
        cfg,              # llmlab.config.TrainSection: steps, batch_size, grad_accum, lr, schedule, ...
        out_dir,          # checkpoints + metrics.jsonl go here (None: no files at all)
        get_batch,        # (step, micro) -> batch for THIS rank; must be a pure function of its
                          #   arguments and of the state `extra_state` saves (that is what makes
                          #   --resume and DDP exact)
        loss_fn,          # (model, batch) -> (loss_sum, count, metrics): loss_sum = the loss SUMMED
                          #   over what it counts (trained tokens, sequences or pairs; a scalar
                          #   tensor), count = how many (a number or scalar tensor). The loop
                          #   divides by the total count over micro-batches and ranks, so a step's
                          #   loss is the mean over every counted item of the global batch.
                          #   metrics: "tokens" and "bytes" are summed (trained targets, their
                          #   UTF-8 bytes; tokens/s, train bpb); other keys are count-weighted means.
        eval_fn=None,     # (model) -> {"val_loss": ..., ...}; called on every rank under
                          #   no_grad/eval mode every cfg.eval_every steps (0: never before) and at the end
        on_checkpoint=None,  # (model_state_dict, step) -> None; rank 0 writes its model files
        sample_fn=None,   # (model) -> str, printed every cfg.sample_every steps
        before_step=None, # (step, model) -> None | int, before each step's micro-batches (RL rollouts
                          #   fill what get_batch reads); an int longer than the run extends it (saved)
        param_groups=None,  # (model) -> [{"params": [...], "lr_scale": 1.0, "weight_decay": ...}];
                          #   called on the final (wrapped) parameters; group lr = lr_t · lr_scale
        extra_state=None, # an object with state_dict() -> dict and load_state_dict(dict): saved in
                          #   train_state.pt and restored on resume (KL controller, prompt cursor, ...)
        frozen=(),        # modules the loss reads but never trains (a reference model): placed on
                          #   the run's device, eval mode, requires_grad off; autocast like the policy
        dist_info=None,   # llmlab.train.distributed.DistInfo (default: setup(cfg.device))
        flops_per_token=None,  # for MFU (default: model.cfg.flops_per_token(context))
        resume=False,     # continue from out_dir/train_state.pt
        verbose=True,     # log lines and a progress bar on rank 0
    )
    summary: {"steps", "train_tokens", "loss", "val_loss", "val_bpb", "wall_s", "tokens_per_s",
              "mfu", "flops", "last_checkpoint_step", ...the last eval's keys}

One step t: before_step(t); lr ← schedule(t); for each micro-batch m of grad_accum on rank r:
(S_rm, N_rm) = loss_fn(model, get_batch(t, m)); backward(S_rm). Then with N = Σ_rm N_rm (one
all-reduce) the gradient is scaled so that it is ∇ Σ_rm S_rm / N: the mean over the global batch
whatever each micro-batch holds (a mean of per-micro-batch means would weight a token of a short
micro-batch more). DDP/FSDP average gradients over W ranks, so the factor is W / N.
Clip ‖g‖₂ to grad_clip; if the loss or ‖g‖ is not finite stop with `TrainingDiverged` (nothing is
written, so the last checkpoint stays good; checked every step on CPU, and on CUDA at each step that
logs, evaluates or saves, so the GPU never waits in between); the optimizer step (AdamW, or Muon
for the hidden matrices with `cfg.optimizer = "muon"`: train/optim.py).
Mixed precision is bf16 autocast on CUDA (fp32 master weights, fp32 loss); CPU runs in fp32.
`cfg.compile` compiles the loss function (model + loss) on one process, the model under DDP/FSDP.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llmlab.errors import UserError
from llmlab.io import progress
from llmlab.train import checkpoint as ckpt
from llmlab.train.distributed import DistInfo, all_reduce_sum, barrier, set_grad_sync, setup, wrap
from llmlab.train.losses import lm_loss
from llmlab.train.metrics_log import MetricsLog
from llmlab.train.mfu import PeakFlops
from llmlab.train.optim import lr_at, make_optimizers

SUMMED_METRICS = ("tokens", "bytes")


class TrainingDiverged(UserError):
    """The loss or gradient norm became NaN/inf; training stopped before the bad update."""


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto" → bf16 autocast on CUDA, fp32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name in ("float32", "fp32"):
        return torch.float32
    if name in ("bfloat16", "bf16"):
        return torch.bfloat16
    raise UserError(f"train.dtype: unknown dtype '{name}'; choose auto, float32 or bfloat16")


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) tuple/list/dict batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, list | tuple) else ()
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


def all_reduce_tensor(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Σ over ranks of a scalar tensor, on its device (no host sync on one process)."""
    if not info.is_distributed:
        return t
    import torch.distributed as dist

    t = t.clone()
    dist.all_reduce(t)
    return t


def _scale_grads(params: list[torch.Tensor], factor: torch.Tensor) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if all(type(g) is torch.Tensor for g in grads):
        torch._foreach_mul_(grads, factor.to(grads[0].device))
    else:  # sharded (DTensor) gradients under FSDP2: a Python number
        torch._foreach_mul_(grads, float(factor))


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def train(
    model: torch.nn.Module,
    cfg,
    out_dir: str | os.PathLike | None,
    get_batch: Callable[[int, int], Any],
    loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, Any, dict]] = lm_loss,
    *,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    on_checkpoint: Callable[[dict, int], None] | None = None,
    sample_fn: Callable[[torch.nn.Module], str] | None = None,
    before_step: Callable[[int, torch.nn.Module], None] | None = None,
    param_groups: Callable[[torch.nn.Module], list[dict]] | None = None,
    extra_state: Any = None,
    frozen: tuple[torch.nn.Module, ...] | list[torch.nn.Module] = (),
    dist_info: DistInfo | None = None,
    flops_per_token: float | None = None,
    resume: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train `model` for cfg.steps optimizer steps; see the module docstring for the contract."""
    info = dist_info or setup(cfg.device)
    main = info.is_main
    out = Path(out_dir) if out_dir is not None else None
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if (verbose and main) else (lambda msg: None)
    if cfg.steps <= 0 or cfg.batch_size <= 0 or cfg.grad_accum <= 0:
        raise UserError("train.steps, train.batch_size and train.grad_accum must be positive")
    lr_at(
        0, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup, steps=cfg.steps, schedule=cfg.schedule
    )  # validates

    device = info.device
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    amp_dtype = resolve_dtype(cfg.dtype, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    raw = model.to(device)
    raw.train()
    for m in frozen:
        m.to(device).eval().requires_grad_(False)
    if flops_per_token is None and hasattr(raw, "cfg"):
        flops_per_token = raw.cfg.flops_per_token()

    # ---- compile, DDP / FSDP2 (FSDP2 shards `raw` in place), then the optimizer over the final
    # parameters (FSDP2 replaces them with sharded ones) -----------------------------------------
    # Single process: compile the whole loss (model + cross-entropy, so the loss's softmax fuses
    # too). Under DDP/FSDP: compile the model before wrapping it (what DDP's graph splitting expects).
    step_loss_fn = loss_fn
    if cfg.compile and not info.is_distributed:
        step_loss_fn = torch.compile(loss_fn)
    net = torch.compile(raw) if cfg.compile and info.is_distributed else raw
    net = wrap(net, info, cfg.distributed)
    groups = param_groups(raw) if param_groups is not None else None
    optimizers = make_optimizers(
        raw, cfg.lr, cfg.weight_decay, groups=groups, optimizer=cfg.optimizer, muon_lr=cfg.muon_lr
    )

    # ---- resume or start fresh ------------------------------------------------------------------
    start_step, last_ckpt, total_tokens, steps = 0, None, 0.0, cfg.steps  # before_step may extend it
    state_file = out / ckpt.STATE_FILE if out else None
    if resume and state_file is not None and state_file.is_file():
        state = ckpt.load_train_state(out)
        try:
            ckpt.restore_state(raw, optimizers, state["model"], state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise UserError(
                f"{state_file}: does not match this model/optimizer ({str(e).splitlines()[0][:120]}); "
                "resume with the recipe that wrote it, or use a new --out"
            ) from None
        ckpt.set_rng_state(state["rng"])
        start_step = last_ckpt = int(state["step"])
        total_tokens = float(state["extra"].get("tokens", 0.0))
        steps = max(cfg.steps, int(state["extra"].get("steps", cfg.steps)))
        if extra_state is not None:
            extra_state.load_state_dict(state["extra"].get("user", {}))
        del state
        say(f"resuming from {state_file} at step {start_step}")
    else:
        if resume:
            say(f"--resume: no {ckpt.STATE_FILE} in {out}; starting fresh")
        torch.manual_seed(cfg.seed + info.rank)  # dropout streams; weights were seeded by the caller
    params = [p for p in raw.parameters() if p.requires_grad]
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype)
        if amp_dtype != torch.float32
        else contextlib.nullcontext()
    )

    log = MetricsLog(out if main else None, start_step)
    if out is not None and main:
        out.mkdir(parents=True, exist_ok=True)
    peak = PeakFlops(  # one device's; MFU divides each rank's share of the global rate by it
        device.type,
        torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "bfloat16" if amp_dtype == torch.bfloat16 else "float32",
    )
    bar = progress(
        total=steps,
        initial=start_step,
        desc="train",
        unit="step",
        disable=None if (verbose and main) else True,
    )

    def evaluate() -> dict[str, float]:
        net.eval()
        with torch.no_grad(), autocast:
            result = eval_fn(net)
        net.train()
        return {k: float(v) for k, v in result.items()}

    def checkpoint(step: int) -> None:
        """Everything for `step` (the next step to run), atomically file by file, rank 0 writing."""
        nonlocal last_ckpt
        if out is None:
            return
        model_state, optim_state = ckpt.gather_state(raw, optimizers)  # a collective under FSDP
        if main:
            if on_checkpoint is not None:
                on_checkpoint(model_state, step)
            ckpt.save_train_state(
                out,
                step=step,
                model_state=model_state,
                optim_state=optim_state,
                extra={
                    "tokens": total_tokens,
                    "steps": steps,
                    "user": extra_state.state_dict() if extra_state is not None else {},
                },
            )
        barrier(info)
        last_ckpt = step

    summary: dict[str, Any] = {"steps": steps, "train_tokens": 0, "loss": math.nan}
    t_start = time.perf_counter()
    t_log, tokens_since_log, steps_since_log, time_in_eval = t_start, 0.0, 0, 0.0
    last_eval: dict[str, float] = {}
    unchecked_tokens: Any = 0.0  # tokens trained since the last check (a device tensor on CUDA)
    if device.type == "cpu":
        # Subnormals as zero while training, in this thread (llmlab.cli.flush_subnormals explains and
        # sets it for the worker threads); the finally below turns it off again.
        torch.set_flush_denormal(True)
    try:
        step = start_step
        while step < steps:
            if before_step is not None:
                longer = before_step(step, raw)
                if longer is not None and longer > steps:
                    steps = summary["steps"] = bar.total = int(longer)
            lr = lr_at(
                step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup, steps=steps, schedule=cfg.schedule
            )
            for group in (g for opt in optimizers for g in opt.param_groups):
                group["lr"] = lr * group.get("lr_scale", 1.0)

            done = step + 1
            is_log = done % cfg.log_every == 0 or done == steps or done == start_step + 1
            is_eval = eval_fn is not None and (
                bool(cfg.eval_every and done % cfg.eval_every == 0) or done == steps
            )
            is_save = done == steps or bool(cfg.save_every and done % cfg.save_every == 0)
            # Reading a number back waits for the device. On CPU that is free: check every step. On
            # CUDA only on steps that log, evaluate or save, so the GPU never idles in between; a NaN
            # is still caught before any checkpoint could be written.
            check = device.type != "cuda" or is_log or is_eval or is_save

            loss_sum = torch.zeros((), device=device)
            count_sum = torch.zeros((), device=device)
            # this step's metrics, summed over micro-batches (lazy tensors); means weighted by count
            sums: dict[str, Any] = {}
            for micro in range(cfg.grad_accum):
                batch = to_device(get_batch(step, micro), device)
                set_grad_sync(net, micro == cfg.grad_accum - 1)
                with autocast:
                    loss, count, metrics = step_loss_fn(net, batch)
                loss.backward()  # the sum; scaled by 1/N below, once N is known
                loss_sum += loss.detach().float()
                count = count.detach().float() if isinstance(count, torch.Tensor) else float(count)
                count_sum += count
                if "tokens" not in metrics:
                    first = _first_tensor(batch)
                    metrics = {**metrics, "tokens": first.numel() if first is not None else 0}
                for k, v in metrics.items():
                    v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
                    sums[k] = sums.get(k, 0.0) + (v if k in SUMMED_METRICS else v * count)
            unchecked_tokens = unchecked_tokens + sums["tokens"]
            total_count = all_reduce_tensor(count_sum, info)
            _scale_grads(params, info.world_size / total_count.clamp_min(1.0))

            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
                grad_norm = grad_norm.full_tensor()
            if check:
                # One all-reduce: loss and metrics averaged/summed over ranks (every rank then takes
                # the same decision below).
                keys = sorted(sums)
                reduced = all_reduce_sum(
                    [float(loss_sum), float(unchecked_tokens)] + [float(sums[k]) for k in keys], info
                )
                n_items = max(1.0, float(total_count))
                step_loss = reduced[0] / n_items
                n_tok, unchecked_tokens = reduced[1], 0.0
                step_metrics = {
                    k: (v if k in SUMMED_METRICS else v / n_items) for k, v in zip(keys, reduced[2:])
                }
                gnorm = float(grad_norm)
                if not (math.isfinite(step_loss) and math.isfinite(gnorm)):
                    where = (
                        f"the last good checkpoint (step {last_ckpt}) in {out} is intact; "
                        if last_ckpt is not None
                        else "no checkpoint was written; "
                    )
                    raise TrainingDiverged(
                        f"step {step}: loss is {step_loss} (gradient norm {gnorm}); training stopped, "
                        f"{where}lower train.lr, raise train.warmup or train.grad_clip, then rerun "
                        "(with --resume to continue from the checkpoint)"
                    )
                total_tokens += n_tok
                tokens_since_log += n_tok
                summary["loss"] = step_loss
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)
            steps_since_log += 1
            bar.update(1)

            if is_log:
                now = time.perf_counter()
                dt = max(1e-9, now - t_log - time_in_eval)
                tps = tokens_since_log / dt
                t0 = time.perf_counter()  # a CPU peak re-measure (rare, see mfu.py) is not training time
                mfu = peak.mfu((flops_per_token or 0.0) * tps / info.world_size)
                measuring = time.perf_counter() - t0
                eta = (steps - done) * dt / steps_since_log
                record = {
                    "step": done,
                    "loss": step_loss,
                    "lr": lr,
                    "grad_norm": gnorm,
                    "tokens": total_tokens,
                    "tok_per_s": tps,
                    "mfu": mfu,
                    "elapsed_s": now - t_start,
                    "eta_s": eta,
                }
                if step_metrics.get("bytes"):
                    record["bpb"] = step_loss * step_metrics["tokens"] / (math.log(2) * step_metrics["bytes"])
                record.update({k: v for k, v in step_metrics.items() if k not in SUMMED_METRICS})
                log.write(record)
                bar.set_postfix(loss=f"{step_loss:.4f}", tok_s=f"{tps:,.0f}", mfu=f"{mfu:.1%}")
                bpb = f" bpb {record['bpb']:.3f}" if "bpb" in record else ""
                if not bar.disable:
                    bar.write(
                        f"step {done}/{steps} loss {step_loss:.4f}{bpb} lr {lr:.2e} "
                        f"gnorm {gnorm:.2f} {tps:,.0f} tok/s mfu {mfu:.1%} eta {_fmt_time(eta)}",
                        file=sys.stderr,
                    )
                elif verbose and main:
                    say(
                        f"step {done}/{steps} loss {step_loss:.4f}{bpb} lr {lr:.2e} gnorm {gnorm:.2f} "
                        f"{tps:,.0f} tok/s mfu {mfu:.1%} eta {_fmt_time(eta)}"
                    )
                summary.update(tokens_per_s=tps, mfu=mfu)
                t_log, tokens_since_log, steps_since_log, time_in_eval = now, 0.0, 0, measuring

            if is_eval:
                t0 = time.perf_counter()
                last_eval = evaluate()
                log.write({"step": done, **last_eval})
                say(f"step {done}: " + " ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
                time_in_eval += time.perf_counter() - t0

            sharded = info.is_distributed and cfg.distributed == "fsdp"
            if (
                sample_fn is not None
                and cfg.sample_every
                and done % cfg.sample_every == 0
                and main
                and not sharded
            ):
                t0 = time.perf_counter()
                net.eval()
                with torch.no_grad():
                    say(f"sample at step {done}: {sample_fn(raw)!r}")
                net.train()
                time_in_eval += time.perf_counter() - t0

            if is_save:
                t0 = time.perf_counter()
                checkpoint(done)
                time_in_eval += time.perf_counter() - t0
            step += 1
        if eval_fn is not None and not last_eval and start_step >= steps:
            last_eval = evaluate()  # resumed a finished run: report its numbers again
    finally:
        bar.close()
        log.close()
        if device.type == "cpu":
            torch.set_flush_denormal(False)  # Python's own floats in this thread obey it too

    wall = time.perf_counter() - t_start
    summary.update(
        train_tokens=int(total_tokens),
        wall_s=wall,
        last_checkpoint_step=last_ckpt,
        flops=(flops_per_token or 0.0) * total_tokens,
        **last_eval,
    )
    summary.setdefault("val_loss", math.nan)
    summary.setdefault("val_bpb", math.nan)
    return summary
