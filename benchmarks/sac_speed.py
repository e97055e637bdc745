"""Training speed of our SAC (`sac_continuous.py`) against Stable-Baselines3's SAC.

Run it from the repository root:

    pip install -r benchmarks/requirements.txt && python benchmarks/sac_speed.py

Useful options: `--repeats 3 --steps 3000 --warmup 1000 --threads 2`, `--impls ours,sb3`,
`--extra-ours "--some-flag 1"`, `--json results.json`.

What it measures
----------------
Training-phase throughput, in env steps per second, of the two implementations under identical
settings: HalfCheetah-v4, one env, batch 256, 256x256 ReLU MLPs for the actor and both critics,
Adam with lr 3e-4 for actor, critics and entropy coefficient, automatic entropy tuning with target
entropy -|A|, gamma 0.99, tau 0.005, target update every step, one gradient step per env step,
actor updated every step, 1M buffer, W random-action warm-up steps, the same seed, CPU only and
the same torch thread count (torch.set_num_threads in each child, plus OMP_NUM_THREADS and
MKL_NUM_THREADS in the child's environment).

Each run is a fresh child process that does `learn(W + N)`: W random warm-up steps, then N steps
that each take a policy action and do one gradient update. The reported steps/s covers only those
N steps, the window [W, W + N]:

- ours: `update_phase_sps` from `<runs_dir>/<run_name>/summary.json`, which our script writes:
  (global_step - W) / time from just before its first update to the end. It updates only while
  global_step > W, so it too does W random steps and then exactly N updates. Its window opens
  after env step W + 1 (one env step fewer than SB3's, under 0.1% at N = 3000) and closes after
  its final checkpoint write (a few MB, also well under 1%).
- SB3: a callback takes time.perf_counter() right after env step W (the last random step, so the
  next thing SB3 does is the first policy step and the first gradient update) and again when
  training ends; steps/s = (final num_timesteps - W) / elapsed. SB3 does no update on the step
  that reaches learning_starts (it trains only while num_timesteps > learning_starts), so
  `learning_starts=W` gives W random steps followed by exactly N updates.

Start-up costs that fall inside the window are counted on both sides: the first gradient updates
(allocator and kernel warm-up). Use a larger `--steps` to dilute them. Runs alternate between
the implementations and the order is swapped every repeat (ours first on even repeats, SB3 first
on odd ones) to cancel slow drift in machine load. Every run uses
the same seed.

Process-level timings are noisy on a shared machine: every run line shows the 1-minute load
average just before it started; anything else running on the cores skews the numbers. Prefer
the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from _common import (
    BenchmarkError,
    RunResult,
    add_driver_args,
    check_driver_args,
    load_1min,
    read_our_summary,
    run_benchmark,
    run_child,
    run_sb3_child,
)

from actor_critic.run_directory import SUMMARY

REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Training-phase steps/s of our SAC vs Stable-Baselines3 SAC.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--env-id", default="HalfCheetah-v4")
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs (one per impl each)")
    p.add_argument("--steps", type=int, default=3000, help="N: timed env steps, one update each")
    p.add_argument("--warmup", type=int, default=1000, help="W: random-action steps before N")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch threads in every child")
    add_driver_args(p, script=REPO_ROOT / "sac_continuous.py")
    args = p.parse_args(argv)

    check_driver_args(p, args)
    if args.steps <= 0 or args.warmup < 0 or args.repeats <= 0:
        p.error("--steps and --repeats must be positive and --warmup non-negative")
    return args


# --------------------------------------------------------------------------- SB3 worker (child)


def sb3_worker(args: argparse.Namespace) -> None:
    """Train SB3's SAC for W + N steps and write the timing of the last N steps as JSON."""
    import torch

    torch.set_num_threads(args.threads)

    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class UpdatePhaseTimer(BaseCallback):
        """Times the window from just after env step W to the end of training."""

        def __init__(self, warmup: int) -> None:
            super().__init__()
            self.warmup = warmup
            self.start_time: float | None = None
            self.start_steps = 0
            self.end_time = 0.0
            self.end_steps = 0

        def _on_step(self) -> bool:
            # Called after every env step, after num_timesteps was incremented and before the
            # gradient update that follows it (SB3 trains only once num_timesteps > W).
            if self.start_time is None and self.num_timesteps >= self.warmup:
                self.start_time = time.perf_counter()
                self.start_steps = self.num_timesteps
            return True

        def _on_training_end(self) -> None:
            self.end_time = time.perf_counter()
            self.end_steps = self.num_timesteps

    env = gym.make(args.env_id)
    model = SAC(
        "MlpPolicy",
        env,
        learning_rate=3e-4,
        buffer_size=1_000_000,
        learning_starts=args.warmup,
        batch_size=256,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        ent_coef="auto",
        target_update_interval=1,
        policy_kwargs={"net_arch": [256, 256]},
        device="cpu",
        seed=args.seed,
        verbose=0,
    )
    timer = UpdatePhaseTimer(args.warmup)
    model.learn(args.warmup + args.steps, callback=timer)
    if timer.start_time is None:
        raise BenchmarkError("SB3 never reached the end of the warm-up")

    steps = timer.end_steps - timer.start_steps
    elapsed = timer.end_time - timer.start_time
    result = {
        "update_phase_sps": steps / elapsed,
        "update_phase_steps": steps,
        "update_phase_s": elapsed,
        "n_updates": int(model._n_updates),
        "torch_threads": torch.get_num_threads(),
        "target_entropy": float(model.target_entropy),
        "actor": str(model.actor.latent_pi),
        "critic": str(model.critic.q_networks[0]),
    }
    args.worker_out.write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------- driver (parent)


def run_ours(args: argparse.Namespace, repeat: int, runs_dir: Path) -> RunResult:
    run_name = f"bench_{repeat}"
    cmd = [
        sys.executable,
        str(args.script),
        "--env-id", args.env_id,
        "--seed", str(args.seed),
        "--total-timesteps", str(args.warmup + args.steps),
        "--learning-starts", str(args.warmup),
        "--batch-size", "256",
        "--num-envs", "1",
        "--buffer-size", "1000000",
        "--gamma", "0.99",
        "--tau", "0.005",
        "--autotune",
        "--alpha", "1.0",  # initial entropy coefficient, as SB3's ent_coef="auto"
        "--policy-lr", "3e-4",
        "--q-lr", "3e-4",
        "--policy-frequency", "1",
        "--target-network-frequency", "1",
        "--hidden-size", "256",
        "--threads", str(args.threads),
        "--no-cuda",
        "--eval-every", "0",
        "--eval-episodes", "0",
        "--checkpoint-every", "0",
        "--runs-dir", str(runs_dir),
        "--run-name", run_name,
    ]  # fmt: skip
    cmd += shlex.split(args.extra_ours)

    what = f"our SAC ({args.script.name}, repeat {repeat + 1})"
    load = load_1min()
    wall = run_child(cmd, runs_dir, args, what)
    summary_path = runs_dir / run_name / SUMMARY
    summary = read_our_summary(summary_path, "SAC", "update_phase_sps")
    if "update_phase_sps" not in summary:
        keys = ", ".join(sorted(summary))
        raise BenchmarkError(f"{summary_path} has no 'update_phase_sps' (keys: {keys})")
    return RunResult("ours", repeat, float(summary["update_phase_sps"]), wall, load, summary)


def run_sb3(args: argparse.Namespace, repeat: int, runs_dir: Path) -> RunResult:
    flags = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    return run_sb3_child(args, repeat, runs_dir, Path(__file__).resolve(), "SAC", "update_phase_sps", flags)


def main() -> int:
    args = parse_args()
    if args.worker == "sb3":
        sb3_worker(args)
        return 0

    header = [
        "SAC training speed: ours vs Stable-Baselines3",
        f"  {args.env_id}, 1 env, batch 256, 256x256 MLPs, 1 update/step, seed {args.seed}",
        f"  warm-up W={args.warmup} random steps, timed window N={args.steps} steps [W, W+N]",
    ]
    specific = {"warmup_steps": args.warmup, "timed_steps": args.steps}
    runners = {"ours": run_ours, "sb3": run_sb3}
    return run_benchmark(args, header, specific, runners, tmp_prefix="sac_speed_")


if __name__ == "__main__":
    sys.exit(main())
