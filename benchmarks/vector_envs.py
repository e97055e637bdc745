"""Env steps per second of Gymnasium's SyncVectorEnv and AsyncVectorEnv, and of EnvPool, on MuJoCo.

    python benchmarks/vector_envs.py --env-id Humanoid-v4 --num-envs 32 64 128 --repeats 3

What it measures: `envs.step` alone, with uniformly random actions drawn before the clock starts
(no policy, no update), over `--steps` env steps in all (summed over the envs) after 10 warm-up
steps, for each backend and number of envs; the median of `--repeats` (each a fresh vector env,
backends alternating). Random actions end Humanoid episodes after ~20 steps, so resets are far
more frequent than in a trained agent's rollout: this is the env cost early in training.

Backends: `sync` (one process steps every env in turn), `async` (one subprocess per env, pipes and
shared memory between them), `envpool` (C++ threads, `--envpool-threads` of them; only if the
`envpool` package imports: `pip install envpool`; it is not a dependency of the project, whose
training and evaluation run on Gymnasium's own envs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import gymnasium as gym
import numpy as np


def make(backend: str, env_id: str, num_envs: int, envpool_threads: int):
    if backend == "envpool":
        import envpool

        return envpool.make_gymnasium(env_id, num_envs=num_envs, seed=0, num_threads=envpool_threads)
    if backend == "workers":  # this project's: a SyncVectorEnv of a share of the envs per core
        from actor_critic import environments

        return environments.make_vector_env(env_id, num_envs, "this benchmark", workers=os.cpu_count() or 1)
    vector_env = gym.vector.AsyncVectorEnv if backend == "async" else gym.vector.SyncVectorEnv
    return vector_env([lambda: gym.make(env_id) for _ in range(num_envs)])


def steps_per_second(backend: str, env_id: str, num_envs: int, steps: int, envpool_threads: int) -> float:
    envs = make(backend, env_id, num_envs, envpool_threads)
    try:
        envs.reset(seed=0)
        space = envs.single_action_space if hasattr(envs, "single_action_space") else envs.action_space
        rng = np.random.default_rng(0)
        iterations = max(steps // num_envs, 1)
        actions = rng.uniform(space.low, space.high, (iterations + 10, num_envs, *space.shape))
        for i in range(10):
            envs.step(actions[i])
        start = time.perf_counter()
        for i in range(10, iterations + 10):
            envs.step(actions[i])
        return iterations * num_envs / (time.perf_counter() - start)
    finally:
        envs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-id", default="Humanoid-v4")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--backends", nargs="+", default=["sync", "async", "workers", "envpool"])
    parser.add_argument("--steps", type=int, default=40_000, help="env steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--envpool-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    backends = list(args.backends)
    if "envpool" in backends:
        try:
            import envpool  # noqa: F401
        except ImportError:
            print("envpool does not import here: skipped (pip install envpool)")
            backends.remove("envpool")
    from actor_critic.training import cpu_name

    print(f"{args.env_id}, {cpu_name()}, {os.cpu_count()} cores")
    results = {}
    for num_envs in args.num_envs:
        runs = {backend: [] for backend in backends}
        for repeat in range(args.repeats):
            order = backends if repeat % 2 == 0 else backends[::-1]
            for backend in order:
                runs[backend].append(
                    steps_per_second(backend, args.env_id, num_envs, args.steps, args.envpool_threads)
                )
        for backend in backends:
            median = statistics.median(runs[backend])
            results[f"{backend}/{num_envs}"] = {"median": median, "runs": runs[backend]}
            shown = ", ".join(f"{r:.0f}" for r in runs[backend])
            print(f"{num_envs:4d} envs  {backend:8s} {median:8.0f} steps/s  ({shown})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env_id": args.env_id, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
