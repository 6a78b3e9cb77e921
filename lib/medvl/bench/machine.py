"""What this machine can do: measured fp32 matmul peak, peak RSS, FLOPs of a module call."""

from __future__ import annotations

import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def matmul_gflops(n: int = 4096, repeats: int = 3) -> float:
    """Best-of-`repeats` fp32 GFLOPS of an n x n matmul with torch's current threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """torch's FlopCounterMode, also counting the CPU flash-attention kernel SDPA runs on here
    (torch counts only its CUDA attention kernels: SAM 2's attention would count as 0)."""
    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
    return FlopCounterMode(display=False, custom_mapping=cpu_attention)


def count_flops(fn, *args) -> int:
    """FLOPs of one call (matmuls, convolutions and attention, as `flop_counter` counts them)."""
    with torch.inference_mode(), flop_counter() as counter:
        fn(*args)
    return int(counter.get_total_flops())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
