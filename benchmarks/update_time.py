"""How long one SAC update takes on this CPU, in fp32 and in bf16, without the environment.

    python benchmarks/update_time.py [--threads 1 2] [--updates 2000]

One row per env size (HalfCheetah: 17 obs, 6 actions; Humanoid: 376 obs, 17 actions) and
thread count: milliseconds per update, in each precision. An update is what the training loop
does per step once learning starts, the script's own `update` at its default settings: sample
a batch of 256 from the buffer, `update_critic`, every second update `update_actor` twice
(`--policy-frequency 2`), `update_target`. The buffer holds random rows: the values do not change
the time of these dense products. Environment stepping, acting, logging and evaluation are left
out (docs/speed.md, "Where the time goes"). bf16 needs a CPU with native bf16; without one its
column says why it is missing.
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


def ms_per_update(precision: str, obs_dim: int, act_dim: int, updates: int) -> float:
    args = sac.Args(precision=precision)
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
    args = p.parse_args()
    if min(args.threads) < 1 or args.updates < 2:
        p.error("threads and updates must be at least 1 and 2")
    no_bf16 = training.bf16_unsupported(torch.device("cpu"))
    print(f"torch {torch.__version__}, {training.cpu_name()}; ms per update, batch 256, 256x256")
    print("| sizes | threads | fp32 | bf16 |")
    print("|---|---|---|---|")
    for name, (obs_dim, act_dim) in SIZES.items():
        for threads in args.threads:
            torch.set_num_threads(threads)
            fp32 = ms_per_update("fp32", obs_dim, act_dim, args.updates)
            bf16 = "-" if no_bf16 else f"{ms_per_update('bf16', obs_dim, act_dim, args.updates):.1f}"
            print(f"| {name} ({obs_dim} obs, {act_dim} actions) | {threads} | {fp32:.1f} | {bf16} |")
    if no_bf16:
        print(f"bf16 not timed: {no_bf16}")


if __name__ == "__main__":
    main()
