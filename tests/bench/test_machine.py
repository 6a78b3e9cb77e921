"""FLOP counting and the machine peak the benchmarks report next to achieved throughput."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medvl.bench.machine import count_flops, flop_counter, matmul_gflops


def test_cpu_attention_is_counted():
    q, k, v = torch.randn(1, 1, 32, 16), torch.randn(1, 1, 48, 16), torch.randn(1, 1, 48, 8)
    with flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == 2 * 32 * 48 * 16 + 2 * 32 * 48 * 8  # Q K^T, then A V


def test_linear_flops():
    layer = torch.nn.Linear(16, 8)
    assert count_flops(layer, torch.randn(4, 16)) == 2 * 4 * 16 * 8


def test_matmul_peak_is_positive():
    assert matmul_gflops(n=128, repeats=1) > 0
