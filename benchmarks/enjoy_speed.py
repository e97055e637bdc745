"""How close `enjoy.py --no-render` scores to the bare env's speed, side by side.

    python benchmarks/enjoy_speed.py                     # trains a tiny SAC on HalfCheetah-v4 first
    python benchmarks/enjoy_speed.py --checkpoint runs/<run>/final_model.pt --repeats 5

Each repeat runs two fresh processes, in alternating order:
- enjoy: `enjoy.py --checkpoint X --no-render --episodes N`, whose own "scored at ... steps/s" is read
  (the time of the scored episodes: the resets and the steps);
- bare: gym.make(env_id), then as many env.step calls as enjoy made, reset(seed=...) at each
  episode's end, timed from the first reset, twice: with actions drawn by action_space.sample() in
  the loop (the usual "random agent" loop), and with the same actions drawn before the clock starts
  (env.step alone: sampling a Box costs a good part of a MuJoCo step).
It reports env steps per second and the ratio enjoy / bare of each pair, and their medians. On a busy
machine only such side-by-side ratios mean anything. Both run with one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from actor_critic.run_directory import FINAL_MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One thread everywhere (torch reads these when it starts); the repository importable from anywhere,
# so that --script can be another copy of enjoy.py.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def bare_worker(env_id: str, steps: int, seed: int) -> None:
    """The bare env loops; prints their steps per second as JSON."""
    import warnings

    import gymnasium as gym
    import numpy as np

    warnings.filterwarnings("ignore", message=".*is out of date.*")
    env = gym.make(env_id)

    def steps_per_s(sample_in_loop: bool) -> float:
        env.action_space.seed(seed)
        actions = None if sample_in_loop else np.stack([env.action_space.sample() for _ in range(steps)])
        env.action_space.seed(seed)
        start = time.perf_counter()
        env.reset(seed=seed)
        episode = 0
        for step in range(steps):
            action = env.action_space.sample() if sample_in_loop else actions[step]
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                episode += 1
                env.reset(seed=seed + episode)
        return steps / (time.perf_counter() - start)

    print(json.dumps({"step_only": steps_per_s(False), "sampled": steps_per_s(True)}))


def run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=ROOT, env=CHILD_ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return done


def enjoy_run(args: argparse.Namespace) -> tuple[float, int]:
    """enjoy.py's own scoring speed, and the env steps it scored."""
    command = [sys.executable, args.script, "--checkpoint", args.checkpoint, "--no-render", "--json", "-"]
    done = run(command + ["--episodes", str(args.episodes)])
    steps = sum(json.loads(done.stdout)["results"][0]["lengths"])
    return float(re.search(r"scored at (\d+) steps/s", done.stderr).group(1)), steps


def bare_run(args: argparse.Namespace, env_id: str, steps: int) -> dict[str, float]:
    command = [sys.executable, os.path.abspath(__file__), "--bare-worker", env_id, str(steps)]
    return json.loads(run(command).stdout)


def tiny_sac(env_id: str, runs_dir: str) -> str:
    """A checkpoint to play: a tiny SAC run, a few seconds of training."""
    print(f"training a tiny SAC on {env_id} in {runs_dir} ...", flush=True)
    run(
        [sys.executable, os.path.join(ROOT, "sac_continuous.py"), "--env-id", env_id]
        + ["--total-timesteps", "2000", "--learning-starts", "1000", "--eval-episodes", "0"]
        + ["--checkpoint-every", "0", "--threads", "1", "--no-cuda"]
        + ["--runs-dir", runs_dir, "--run-name", "tiny"]
    )
    return os.path.join(runs_dir, "tiny", FINAL_MODEL)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--checkpoint", default=None, help="a checkpoint to play (None: train a tiny SAC)")
    p.add_argument("--env-id", default="HalfCheetah-v4", help="the env of the tiny SAC")
    p.add_argument("--episodes", type=int, default=10, help="episodes per enjoy.py run")
    p.add_argument("--repeats", type=int, default=5, help="pairs of runs")
    p.add_argument("--script", default=os.path.join(ROOT, "enjoy.py"), help="the enjoy.py to measure")
    p.add_argument("--json", default=None, help="write the numbers to this file")
    p.add_argument("--bare-worker", nargs=2, metavar=("ENV_ID", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare_worker:
        bare_worker(args.bare_worker[0], int(args.bare_worker[1]), seed=0)
        return
    args.script = os.path.abspath(args.script)  # the children run in the repository's root
    args.checkpoint = os.path.abspath(args.checkpoint) if args.checkpoint else None

    with tempfile.TemporaryDirectory() as runs_dir:
        if args.checkpoint is None:
            args.checkpoint = tiny_sac(args.env_id, runs_dir)
        import torch  # only to read the checkpoint's env

        env_id = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["env_id"]
        _, steps = enjoy_run(args)  # a warm-up run, which also tells how many steps to time
        print(f"{args.script} on {args.checkpoint} ({env_id}): {args.episodes} episodes, {steps} env steps")
        print("repeat  order        load  enjoy  bare: step only  ratio  sampled in loop  ratio   (steps/s)")
        pairs = []
        for repeat in range(args.repeats):
            load = os.getloadavg()[0]
            if repeat % 2 == 0:  # alternate which goes first, so that neither always gets the calmer moment
                bare, (enjoy, _) = bare_run(args, env_id, steps), enjoy_run(args)
            else:
                (enjoy, _), bare = enjoy_run(args), bare_run(args, env_id, steps)
            ratios = {name: enjoy / speed for name, speed in bare.items()}
            pairs.append({"enjoy": enjoy, "bare": bare, "ratio": ratios, "load": load})
            order = "bare, enjoy" if repeat % 2 == 0 else "enjoy, bare"
            print(
                f"{repeat + 1:>6}  {order}  {load:4.2f}  {enjoy:5.0f}  {bare['step_only']:15.0f}  "
                f"{ratios['step_only']:5.2f}  {bare['sampled']:15.0f}  {ratios['sampled']:5.2f}"
            )
    medians = {
        name: statistics.median(pair["ratio"][name] for pair in pairs) for name in ("step_only", "sampled")
    }
    print(
        f"median ratio enjoy / bare: {medians['step_only']:.2f} against env.step alone, "
        f"{medians['sampled']:.2f} against the loop that samples its actions"
    )
    if args.json:
        summary = {"checkpoint": args.checkpoint, "env_id": env_id, "episodes": args.episodes, "steps": steps}
        with open(args.json, "w") as f:
            json.dump({**summary, "pairs": pairs, "median_ratio": medians}, f, indent=2)


if __name__ == "__main__":
    main()
