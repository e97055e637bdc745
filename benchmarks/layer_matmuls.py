"""How fast the matrix products of SAC's twin critic run on this CPU, in fp32 and in bf16.

    python benchmarks/layer_matmuls.py [--threads 1] [--obs-act 23] [--hidden 256] [--batch 256]

One row per layer shape of the critic (input obs+action -> hidden, hidden -> hidden, hidden -> 1)
and per dtype: the time of one product of a batch for one critic (`mm`), for both critics at once
as the script computes them (`baddbmm`, bias included, on a leading dimension of 2), and the
weight-gradient product of the backward (`x^T @ grad`), each in microseconds and GFLOP/s: how
close to the CPU's speed each one runs at these small sizes. Whether they are most of an update's
time depends on the CPU and the precision (docs/speed.md, "Where the time goes"). A second table
times the elementwise work around the hidden layer's product, both critics at once: the ReLU of
its output, the ReLU's backward, and in bf16 the cast of its fp32 weight that autocast adds to
every forward pass. Defaults: HalfCheetah's sizes (17 obs + 6 actions), batch 256, 256 hidden
units, one thread.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

DTYPES = (("fp32", torch.float32), ("bf16", torch.bfloat16))


def microseconds(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...], calls: int) -> float:
    for _ in range(calls // 10):  # warm-up: the first calls choose and prepare kernels
        fn(*inputs)
    start = time.perf_counter()
    for _ in range(calls):
        fn(*inputs)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--obs-act", type=int, default=23, help="observation + action size (critic input)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--calls", type=int, default=2000, help="timed calls per product")
    args = p.parse_args()
    if min(args.threads, args.obs_act, args.hidden, args.batch, args.calls) < 1:
        p.error("every number must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}; us per call (GFLOP/s)")
    print("| dtype | layer | mm, one critic | baddbmm, two critics | weight grad, one critic |")
    print("|---|---|---|---|---|")
    shapes = ((args.obs_act, args.hidden), (args.hidden, args.hidden), (args.hidden, 1))
    for name, dtype in DTYPES:
        for fan_in, fan_out in shapes:
            x, w = torch.randn(args.batch, fan_in, dtype=dtype), torch.randn(fan_in, fan_out, dtype=dtype)
            xs, ws = torch.stack([x, x]), torch.stack([w, w])
            bias = torch.randn(2, 1, fan_out, dtype=dtype)
            grad, x_t = torch.randn(args.batch, fan_out, dtype=dtype), x.t()
            flop = 2 * args.batch * fan_in * fan_out  # one critic's product
            cells = []
            for fn, inputs, critics in (
                (torch.mm, (x, w), 1),
                (torch.baddbmm, (bias, xs, ws), 2),
                (torch.mm, (x_t, grad), 1),  # as autograd computes it: x transposed, not copied
            ):
                us = microseconds(fn, inputs, args.calls)
                cells.append(f"{us:.1f} ({critics * flop / us / 1e3:.1f})")
            print(f"| {name} | {fan_in} -> {fan_out} | " + " | ".join(cells) + " |")
    print(f"\nus per call, both critics' hidden layer (2x{args.batch}x{args.hidden} activations)")
    print("| dtype | ReLU | ReLU backward | cast of the fp32 weight |")
    print("|---|---|---|---|")
    weight = torch.randn(2, args.hidden, args.hidden)
    for name, dtype in DTYPES:
        activations = torch.randn(2, args.batch, args.hidden, dtype=dtype)
        grad = torch.randn_like(activations)
        relu = microseconds(torch.relu, (activations,), args.calls)
        relu_backward = microseconds(torch.ops.aten.threshold_backward, (grad, activations, 0), args.calls)
        cast = "-"  # fp32 products use the weight as it is
        if dtype == torch.bfloat16:
            cast = f"{microseconds(lambda w: w.to(torch.bfloat16), (weight,), args.calls):.1f}"
        print(f"| {name} | {relu:.1f} | {relu_backward:.1f} | {cast} |")


if __name__ == "__main__":
    main()
