"""Model FLOPs utilisation: the fraction of the hardware's peak that training turns into model math.

    MFU = achieved model FLOP/s / peak FLOP/s,   achieved = FLOPs per token · tokens per second
with FLOPs per token = 6·N + attention (`ModelConfig.flops_per_token`).

The peak, by device:
- CUDA: the datasheet's dense number (no sparsity) for the GPU's name: bf16 tensor cores, or half
  of that for fp32 matmuls (run as TF32). Unknown GPUs get the A100's.
- CPU (and MPS): no datasheet number is useful, so the peak is *measured*: the best rate of a
  1024×1024 fp32 matmul on the threads torch uses. One measurement at the start of a run is a
  lower bound of the machine's real peak, and a low one when other processes were busy then (or
  the run then gets more threads), which would make MFU read above 100%. So the CPU peak is the
  best rate seen so far, per thread count: when the model's achieved FLOP/s exceeds it, the
  matmul is measured again, and the peak becomes the largest of the old peak, the new
  measurement and the achieved rate itself (the model's own matmuls prove the machine can do
  that much). CPU MFU is therefore always ≤ 100%, and reads as "the fraction of the best matmul
  rate this process has seen on this machine", not of a vendor's number.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

# Dense bf16 tensor-core peaks (FLOP/s) by device-name substring, most specific first.
GPU_PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "H800": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "A10G": 70e12,
    "A10": 125e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}
UNKNOWN_GPU_BF16 = 312e12

# Best measured matmul FLOP/s by (device type, torch threads), for the whole process.
_MEASURED: dict[tuple[str, int], float] = {}


def measure_matmul_flops(
    n: int = 1024,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seconds: float = 0.3,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Achieved FLOP/s of an n×n @ n×n matmul: 2n³ FLOPs each, 4 per timed round, best round of
    a loop of `seconds` (by `clock`)."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best, t_end = 0.0, clock() + seconds
    while clock() < t_end:
        t0 = clock()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * n**3 / (clock() - t0))
    return best


def gpu_peak_flops(device_name: str, dtype: str = "float32") -> float:
    """The datasheet's dense peak for a GPU name: bf16, or half of it for fp32 (TF32) matmuls."""
    peak = next((p for key, p in GPU_PEAK_BF16.items() if key in device_name), UNKNOWN_GPU_BF16)
    return peak if dtype == "bfloat16" else peak / 2


class PeakFlops:
    """The peak FLOP/s that MFU divides by, for one run's device (see the module docstring).

    `measure()` gives a matmul rate for a CPU/MPS device (default: `measure_matmul_flops` there);
    `mfu(achieved)` may call it again when `achieved` exceeds the peak, so CPU MFU stays ≤ 1."""

    def __init__(
        self,
        device_type: str,
        device_name: str = "",
        dtype: str = "float32",
        measure: Callable[[], float] | None = None,
    ):
        self.measured = device_type != "cuda"
        if not self.measured:
            self.value = gpu_peak_flops(device_name, dtype)
            return
        dev = device_type if device_type in ("cpu", "mps") else "cpu"
        self.measure = measure or (lambda: measure_matmul_flops(device=dev))
        self.key = (dev, torch.get_num_threads())
        if self.key not in _MEASURED:
            _MEASURED[self.key] = self.measure()
        self.value = _MEASURED[self.key]

    def mfu(self, achieved: float) -> float:
        """achieved / peak, raising a measured peak first when `achieved` (model FLOP/s) beats it."""
        if self.measured and achieved > self.value:
            self.value = max(self.value, self.measure(), achieved)
            _MEASURED[self.key] = self.value
        return achieved / self.value if self.value > 0 else 0.0
