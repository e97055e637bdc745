"""Training speed of our PPO (`ppo_continuous.py`) against Stable-Baselines3's PPO.

Run it from the repository root:

    pip install -r benchmarks/requirements.txt && python benchmarks/ppo_speed.py

Useful options: `--repeats 3 --steps 12288 --threads 1`, `--impls ours,sb3`,
`--extra-ours "--some-flag 1"`, `--json results.json`.

What it measures
----------------
Training throughput after the first iteration, in env steps per second, of the two
implementations under identical settings: HalfCheetah-v4, one env, rollouts of 2048 steps, 10
epochs of 32 minibatches of 64, separate 64x64 tanh MLPs for the policy and the value function
(orthogonal init, state-independent log std), Adam with a constant lr 3e-4 (no annealing),
gamma 0.99, GAE lambda 0.95, clip 0.2, no value-loss clipping, entropy coefficient 0, value
coefficient 0.5, max grad norm 0.5, per-minibatch advantage normalization, no observation or
reward normalization, the same seed, CPU only and the same torch thread count
(torch.set_num_threads in each child, plus OMP_NUM_THREADS and MKL_NUM_THREADS in the child's
environment). Our script gets `--no-clip-vloss --no-norm-obs --no-norm-reward --no-anneal-lr` to
match SB3's defaults (clip_range_vf=None, no VecNormalize, constant learning rate).

Each run is a fresh child process that trains for T = `--steps` env steps, a whole number of
rollouts (default 6 rollouts, 12288 steps). The first iteration (first rollout and first update)
is a warm-up and is not timed; the reported steps/s covers the other T/2048 - 1 iterations, the
window [2048, T]:

- ours: `steady_sps` from `<runs_dir>/<run_name>/summary.json`, which our script writes:
  (global_step - 2048) / time from the end of its first iteration (after its first update) to
  the end of training. Its window closes after its final checkpoint write (networks of 64x64,
  well under 1%).
- SB3: a callback takes time.perf_counter() when the second rollout starts (`_on_rollout_start`
  the second time, right after the first training phase) and again when training ends;
  steps/s = (final num_timesteps - num_timesteps at the second rollout start) / elapsed.

Both count env steps the same way, but they spend them slightly differently: with Gymnasium
1.x's next-step autoreset our rollout spends one of its steps on each env reset (no physics step,
no transition, no loss: HalfCheetah's 1000-step episodes make that about 2 of every 2048 steps,
so our minibatches are ~0.1% smaller), while SB3's DummyVecEnv resets inside the step that ends
an episode and then evaluates the value of the final observation to bootstrap the time limit.
HalfCheetah never terminates early, so both see the same episode boundaries whatever the policy.
Not matched, and irrelevant to speed: our value loss is 0.5 * MSE before vf_coef, SB3's is MSE.

`--recipe large-batch` compares docs/ppo.md's large-batch Humanoid recipe instead (Humanoid-v4,
64 envs x 64 steps, 4 epochs of minibatches of 1024, 512x256x128 ELU networks, gamma 0.995):
ours with the recipe's own flags (two env workers among them; give `--threads 2`), SB3 with the
same envs, rollout, minibatches, epochs and networks, observations normalized by VecNormalize,
its envs in its own process (`--sb3-vec-env dummy`) or one subprocess each (`subproc`). What the
recipe adds beyond that (value normalization, reward scale, the KL-adaptive rate: one host sync an
epoch) costs ours, not SB3.

Runs alternate between the implementations and the order is swapped every repeat (ours first on
even repeats, SB3 first on odd ones) to cancel slow drift in machine load. Every run uses the
same seed.

Process-level timings are noisy on a shared machine: every run line shows the 1-minute load
average just before it started; anything else running on the cores skews the numbers. Prefer
the median of the per-pair ratios, and a larger `--steps` (more timed iterations) when the
pairs disagree. These networks are tiny, so a second torch thread buys nothing, and on this
project's 2-core VM it can make SB3 many times slower (small operations hand work between the
threads slowly): the default is 1 thread on both sides, as ppo_continuous.py defaults to.
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

# The settings both sides share (see the module docstring), per --recipe. "large-batch" is
# docs/ppo.md's Humanoid recipe: ours runs it as published (its flags below), SB3 with the same
# envs, rollout, minibatches, epochs and network, observations normalized by VecNormalize.
RECIPES = {
    "default": dict(
        num_envs=1, num_steps=2048, batch_size=64, epochs=10, hidden=[64, 64], activation="tanh", gamma=0.99
    ),
    "large-batch": dict(
        num_envs=64,
        num_steps=64,
        batch_size=1024,
        epochs=4,
        hidden=[512, 256, 128],
        activation="elu",
        gamma=0.995,
    ),
}
LARGE_BATCH_FLAGS = (
    "--kl-adaptive-lr 0.008 --no-clip-vloss --vf-coef 1.0 --no-norm-reward --reward-scale 0.1"
    " --norm-value --env-workers 2"
).split()
LR = 3e-4
GAE_LAMBDA = 0.95
CLIP = 0.2
ENT_COEF = 0.0
VF_COEF = 0.5
MAX_GRAD_NORM = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Steps/s after the first iteration of our PPO vs Stable-Baselines3 PPO.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--env-id", default=None, help="default: HalfCheetah-v4, Humanoid-v4 for large-batch")
    p.add_argument("--recipe", choices=list(RECIPES), default="default", help="the settings compared")
    p.add_argument(
        "--sb3-vec-env",
        choices=["dummy", "subproc"],
        default="dummy",
        help="SB3's envs: in its process, or one subprocess each (with --recipe large-batch)",
    )
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs (one per impl each)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="T: total env steps per run, whole rollouts (default 6 of them); the first "
        "rollout and update are not timed",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads in every child")
    add_driver_args(p, script=REPO_ROOT / "ppo_continuous.py")
    args = p.parse_args(argv)

    check_driver_args(p, args)
    recipe = RECIPES[args.recipe]
    args.env_id = args.env_id or ("Humanoid-v4" if args.recipe == "large-batch" else "HalfCheetah-v4")
    rollout = recipe["num_envs"] * recipe["num_steps"]
    args.steps = args.steps or 6 * rollout
    if args.repeats <= 0 or args.threads <= 0:
        p.error("--repeats and --threads must be positive")
    if args.steps % rollout != 0 or args.steps < 2 * rollout:
        p.error(
            f"--steps must be a whole number of {rollout}-step rollouts, at least 2 (the first "
            f"is not timed), got {args.steps}; e.g. {max(2, round(args.steps / rollout)) * rollout}"
        )
    return args


# --------------------------------------------------------------------------- SB3 worker (child)


def sb3_worker(args: argparse.Namespace) -> None:
    """Train SB3's PPO for T steps and write the timing of all but the first iteration as JSON."""
    import torch

    torch.set_num_threads(args.threads)

    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    class SteadyTimer(BaseCallback):
        """Times the window from the start of the second rollout to the end of training."""

        def __init__(self) -> None:
            super().__init__()
            self.rollouts = 0
            self.start_time: float | None = None
            self.start_steps = 0
            self.end_time = 0.0
            self.end_steps = 0

        def _on_rollout_start(self) -> None:
            # learn() alternates collect_rollouts() and train(); the second rollout starts right
            # after the first training phase, where our script's window opens too.
            self.rollouts += 1
            if self.rollouts == 2:
                self.start_time = time.perf_counter()
                self.start_steps = self.model.num_timesteps

        def _on_step(self) -> bool:
            return True

        def _on_training_end(self) -> None:
            self.end_time = time.perf_counter()
            self.end_steps = self.model.num_timesteps

    recipe = RECIPES[args.recipe]
    if args.recipe == "large-batch":
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

        vec_env_class = SubprocVecEnv if args.sb3_vec_env == "subproc" else DummyVecEnv
        env = make_vec_env(args.env_id, recipe["num_envs"], seed=args.seed, vec_env_cls=vec_env_class)
        env = VecNormalize(env, norm_obs=True, norm_reward=False)
    else:
        env = gym.make(args.env_id)
    activations = {"tanh": torch.nn.Tanh, "elu": torch.nn.ELU}
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=LR,
        n_steps=recipe["num_steps"],
        batch_size=recipe["batch_size"],
        n_epochs=recipe["epochs"],
        gamma=recipe["gamma"],
        gae_lambda=GAE_LAMBDA,
        clip_range=CLIP,
        ent_coef=ENT_COEF,
        vf_coef=VF_COEF,
        max_grad_norm=MAX_GRAD_NORM,
        policy_kwargs={
            "net_arch": {"pi": recipe["hidden"], "vf": recipe["hidden"]},
            "activation_fn": activations[recipe["activation"]],
        },
        device="cpu",
        seed=args.seed,
        verbose=0,
    )
    timer = SteadyTimer()
    model.learn(args.steps, callback=timer)
    if timer.start_time is None:
        raise BenchmarkError("SB3 never started its second rollout")

    steps = timer.end_steps - timer.start_steps
    elapsed = timer.end_time - timer.start_time
    policy = model.policy
    result = {
        "steady_sps": steps / elapsed,
        "steady_steps": steps,
        "steady_s": elapsed,
        "total_timesteps": int(model.num_timesteps),
        "rollouts": timer.rollouts,
        "epochs_done": int(model._n_updates),  # SB3 counts one "update" per epoch
        "gradient_steps": int(model._n_updates)
        * -(-recipe["num_envs"] * recipe["num_steps"] // recipe["batch_size"]),
        "vec_env": type(env.venv if hasattr(env, "venv") else env).__name__,
        "torch_threads": torch.get_num_threads(),
        "clip_range_vf": model.clip_range_vf,
        "normalize_advantage": model.normalize_advantage,
        "ortho_init": policy.ortho_init,
        "log_std_shape": list(policy.log_std.shape),  # a parameter: state-independent
        "optimizer": f"{type(policy.optimizer).__name__} {policy.optimizer.defaults.get('eps')}",
        "policy_net": str(policy.mlp_extractor.policy_net),
        "value_net": str(policy.mlp_extractor.value_net),
    }
    args.worker_out.write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------- driver (parent)


def run_ours(args: argparse.Namespace, repeat: int, runs_dir: Path) -> RunResult:
    run_name = f"bench_{repeat}"
    recipe = RECIPES[args.recipe]
    cmd = [
        sys.executable,
        str(args.script),
        "--env-id", args.env_id,
        "--seed", str(args.seed),
        "--total-timesteps", str(args.steps),
        "--num-envs", str(recipe["num_envs"]),
        "--num-steps", str(recipe["num_steps"]),
        "--minibatch-size", str(recipe["batch_size"]),
        "--update-epochs", str(recipe["epochs"]),
        "--hidden-sizes", *map(str, recipe["hidden"]),
        "--activation", recipe["activation"],
        "--learning-rate", str(LR),
        "--no-anneal-lr",
        "--gamma", str(recipe["gamma"]),
        "--gae-lambda", str(GAE_LAMBDA),
        "--clip-coef", str(CLIP),
        "--no-clip-vloss",  # SB3: clip_range_vf=None
        "--ent-coef", str(ENT_COEF),
        "--vf-coef", str(VF_COEF),
        "--max-grad-norm", str(MAX_GRAD_NORM),
        "--norm-adv",
        "--no-norm-obs",  # SB3 normalizes nothing without VecNormalize
        "--no-norm-reward",
        "--log-std-init", "0",  # SB3's log_std_init (our default is -1)
        "--threads", str(args.threads),
        "--no-cuda",
        "--eval-every", "0",
        "--eval-episodes", "0",
        "--checkpoint-every", "0",
        "--runs-dir", str(runs_dir),
        "--run-name", run_name,
    ]  # fmt: skip
    if args.recipe == "large-batch":  # the recipe as published: the later flags win
        cmd += ["--norm-obs", *LARGE_BATCH_FLAGS]
    cmd += shlex.split(args.extra_ours)

    what = f"our PPO ({args.script.name}, repeat {repeat + 1})"
    load = load_1min()
    wall = run_child(cmd, runs_dir, args, what)
    summary_path = runs_dir / run_name / SUMMARY
    summary = read_our_summary(summary_path, "PPO", "steady_sps")
    if summary.get("steady_sps") is None:
        keys = ", ".join(sorted(summary))
        raise BenchmarkError(f"{summary_path} has no 'steady_sps' value (keys: {keys})")
    return RunResult("ours", repeat, float(summary["steady_sps"]), wall, load, summary)


def run_sb3(args: argparse.Namespace, repeat: int, runs_dir: Path) -> RunResult:
    flags = ["--steps", str(args.steps), "--recipe", args.recipe, "--sb3-vec-env", args.sb3_vec_env]
    return run_sb3_child(args, repeat, runs_dir, Path(__file__).resolve(), "PPO", "steady_sps", flags)


def main() -> int:
    args = parse_args()
    if args.worker == "sb3":
        sb3_worker(args)
        return 0

    recipe = RECIPES[args.recipe]
    rollout = recipe["num_envs"] * recipe["num_steps"]
    rollouts = args.steps // rollout
    sizes = "x".join(map(str, recipe["hidden"]))
    header = [
        f"PPO training speed: ours vs Stable-Baselines3 (--recipe {args.recipe})",
        f"  {args.env_id}, {recipe['num_envs']} env(s) x {recipe['num_steps']}-step rollouts, "
        f"{recipe['epochs']} epochs of minibatches of {recipe['batch_size']}, {sizes} "
        f"{recipe['activation']} MLPs, seed {args.seed}"
        + (f", SB3 with {args.sb3_vec_env} envs" if args.recipe == "large-batch" else ""),
        f"  T={args.steps} steps ({rollouts} rollouts); timed window [{rollout}, {args.steps}]: "
        f"{rollouts - 1} iterations after the first",
    ]
    specific = {
        "recipe": args.recipe,
        "total_steps": args.steps,
        "rollout_steps": rollout,
        "timed_steps": args.steps - rollout,
        "minibatch_size": recipe["batch_size"],
        "epochs": recipe["epochs"],
        "hidden": recipe["hidden"],
        "sb3_vec_env": args.sb3_vec_env,
    }
    runners = {"ours": run_ours, "sb3": run_sb3}
    return run_benchmark(args, header, specific, runners, tmp_prefix="ppo_speed_")


if __name__ == "__main__":
    sys.exit(main())
