"""Per-call planning overhead: the planner's choice alone, and a whole 64-token attention call.

    PYTHONPATH=src python benchmarks/planner_overhead.py
"""

import timeit

import torch

import attnlab
from attnlab.exec import planner

torch.set_num_threads(1)
B, H, N, D = 1, 4, 64, 32
q, k, v = (torch.randn(B, H, N, D) for _ in range(3))
program = attnlab.parse("scaled_dot ; causal ; softmax")


def best_us(fn, number=2000, repeat=7) -> float:
    fn()
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


choose = getattr(planner, "DEFAULT", None)
if choose is not None:  # the Planner object: its cached per-call choice
    from attnlab.exec.api import check_call
    inp = check_call(q, k, v, program, params={})
    per_call = best_us(lambda: choose.choose(program, q, k, v, inp))
else:
    per_call = best_us(lambda: planner.plan(program, q, k, v))
with torch.no_grad():
    whole = best_us(lambda: attnlab.attention(q, k, v, program))
    forced = best_us(lambda: attnlab.attention(q, k, v, program, backend="sdpa"))
    sdpa = best_us(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
print(f"planner per-call choice: {per_call:.1f} µs")
print(f"attnlab.attention (planned): {whole:.1f} µs")
print(f"attnlab.attention (backend='sdpa'): {forced:.1f} µs")
print(f"bare SDPA is_causal: {sdpa:.1f} µs")
print(f"attnlab overhead over bare SDPA: {whole - sdpa:.1f} µs ({(whole - sdpa) / whole:.0%} of the call)")
