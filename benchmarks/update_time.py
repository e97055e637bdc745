"""How long one SAC update takes on this CPU, in fp32 and in bf16, without the environment.

    python benchmarks/update_time.py [--threads 1 2] [--updates 2000] [--hidden-size 256 --batch-size 256]

One row per env size (HalfCheetah: 17 obs, 6 actions; Humanoid: 376 obs, 17 actions) and
thread count: milliseconds per update, in each precision. An update is what the training loop
does per step once learning starts, the script's own `update` at its default settings: sample
a batch of 256 from the buffer, `update_critic`, every second update `update_actor` twice
(`--policy-frequency 2`), `update_target`. The buffer holds random rows: the values do not change
the time of these dense products. Environment stepping, acting, logging and evaluation are left
out (docs/speed.md, "Where the time goes"). bf16 needs a CPU with native bf16; without one its
column says why it is missing.

`--compile` times the same update with the script's `update_critic` and `update_actor` (their
forward and backward passes and optimizer steps) compiled by `torch.compile`, its default backend,
compiled afresh for each cell; the compilation is left out of the time.

`--hidden-size 8 --batch-size 8` times the same update on networks and a batch so small that their
arithmetic is negligible: what is left is the update's fixed cost, the several hundred small
operations around the products (Python, dispatch, autograd, casts, optimizer calls), which a compiled
update does not pay.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sac_continuous as sac  # noqa: E402
from actor_critic import training  # noqa: E402

SIZES = {"HalfCheetah": (17, 6), "Humanoid": (376, 17)}


EAGER = sac.update_critic, sac.update_actor


def ms_per_update(
    precision: str,
    obs_dim: int,
    act_dim: int,
    updates: int,
    hidden_size: int = 256,
    batch_size: int = 256,
    compiled: bool = False,
) -> float:
    sac.update_critic, sac.update_actor = EAGER
    if compiled:  # `sac.update` calls these two by name; compiled afresh for each cell
        torch._dynamo.reset()
        sac.update_critic, sac.update_actor = torch.compile(EAGER[0]), torch.compile(EAGER[1])
    args = sac.Args(precision=precision, hidden_size=hidden_size, batch_size=batch_size)
    torch.manual_seed(0)
    low, high = -np.ones(act_dim, dtype=np.float32), np.ones(act_dim, dtype=np.float32)
    learner = sac.Learner(args, obs_dim, act_dim, low, high, torch.device("cpu"))
    rows = 10_000
    rb = sac.ReplayBuffer(rows, obs_dim, act_dim, torch.device("cpu"))
    rb.add(
        torch.randn(rows, obs_dim),
        torch.randn(rows, obs_dim),
        torch.rand(rows, act_dim) * 2 - 1,
        torch.randn(rows),
        torch.zeros(rows),
    )
    qf_params, qf_target_params = list(learner.qf.parameters()), list(learner.qf_target.parameters())
    for count in range(max(updates // 10, 2 * args.policy_frequency)):  # warm-up: kernels, allocator
        sac.update(args, learner, rb, count, qf_params, qf_target_params)
    start = time.perf_counter()
    for count in range(updates):  # the training loop's own learning step, nothing else
        sac.update(args, learner, rb, count, qf_params, qf_target_params)
    return (time.perf_counter() - start) / updates * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--updates", type=int, default=2000, help="timed updates per cell")
    p.add_argument("--hidden-size", type=int, default=256, help="units per hidden layer")
    p.add_argument("--batch-size", type=int, default=256, help="rows per update")
    p.add_argument("--compile", action="store_true", help="time the update under torch.compile")
    args = p.parse_args()
    if min(args.threads) < 1 or args.updates < 2 or min(args.hidden_size, args.batch_size) < 1:
        p.error("threads, hidden size and batch size must be at least 1, updates at least 2")
    no_bf16 = training.bf16_unsupported(torch.device("cpu"))
    size = f"batch {args.batch_size}, {args.hidden_size}x{args.hidden_size}" + (", compiled" * args.compile)
    print(f"torch {torch.__version__}, {training.cpu_name()}; ms per update, {size}")
    print("| sizes | threads | fp32 | bf16 |")
    print("|---|---|---|---|")
    for name, (obs_dim, act_dim) in SIZES.items():
        for threads in args.threads:
            torch.set_num_threads(threads)
            cell = (obs_dim, act_dim, args.updates, args.hidden_size, args.batch_size, args.compile)
            fp32 = ms_per_update("fp32", *cell)
            bf16 = "-" if no_bf16 else f"{ms_per_update('bf16', *cell):.1f}"
            print(f"| {name} ({obs_dim} obs, {act_dim} actions) | {threads} | {fp32:.1f} | {bf16} |")
    if no_bf16:
        print(f"bf16 not timed: {no_bf16}")


if __name__ == "__main__":
    main()
