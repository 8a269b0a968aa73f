"""Model FLOPs utilisation: the fraction of the hardware's peak that training turns into model math.

    MFU = (FLOPs per token · tokens per second) / peak FLOP/s
with FLOPs per token = 6·N + attention (`ModelConfig.flops_per_token`). GPU peaks come from the
datasheets (dense, no sparsity); a CPU has no useful datasheet number, so its peak is *measured*:
the rate of a large fp32 matmul on the threads torch uses, which is the best any model step can do.
"""

from __future__ import annotations

import time
from functools import cache

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


def measure_matmul_flops(
    n: int = 1024,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seconds: float = 0.3,
) -> float:
    """Achieved FLOP/s of an n×n @ n×n matmul (2n³ FLOPs each), best of a short timed loop."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


@cache
def peak_flops(device_type: str, device_name: str = "", dtype: str = "float32") -> float:
    """Peak FLOP/s used for MFU: the datasheet table on CUDA, a measured fp32 matmul on CPU."""
    if device_type == "cuda":
        for key, peak in GPU_PEAK_BF16.items():
            if key in device_name:
                return peak if dtype == "bfloat16" else peak / 2  # TF32 runs at half the bf16 rate
        return 312e12
    return measure_matmul_flops(device=device_type if device_type in ("cpu", "mps") else "cpu")
