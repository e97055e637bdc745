"""Training speed of our SAC (`sac_continuous.py`, fp32 and bf16) against Stable-Baselines3's SAC
and SBX's (the JAX port of SB3), side by side on this machine, over a grid of envs x threads.

Run it from the repository root:

    pip install -r benchmarks/requirements.txt
    python benchmarks/sac_speed.py --repeats 3 --steps 2000 --warmup 1000 --json results.json

Options: `--impls` (comma-separated subset of ours,ours-bf16,sb3,sbx; default all of them),
`--env-ids` (comma-separated, default HalfCheetah-v4,Humanoid-v4), `--threads` (comma-separated
thread counts, default 1,2), `--repeats`, `--steps` N, `--warmup` W, `--sbx-settle` K,
`--extra-ours "--some-flag 1"` (for both of our runs), `--script <other tree>/sac_continuous.py`,
`--json results.json`, `--keep-runs`, `--verbose`. The defaults run 4 x 2 x 2 x 3 = 48 children.

What it measures
----------------
Training-phase throughput, in env steps per second, of these implementations under identical
settings: one env, batch 256, 256x256 ReLU MLPs for the actor and both critics, Adam with lr 3e-4
for actor, critics and entropy coefficient, automatic entropy tuning from an initial coefficient of
1.0 with target entropy -|A|, gamma 0.99, tau 0.005, target update every step, one gradient step
per env step, actor updated every step, 1M buffer, W random-action warm-up steps, the same seed,
CPU only:

- ours: our script at fp32 (its default; no --precision flag, so --script may name an older tree);
- ours-bf16: the same command plus `--precision bf16` (the update's forward passes under bf16
  autocast); left out, with a note, where the CPU has no native bf16 (`--impls ours-bf16` then
  stops in one line);
- sb3: Stable-Baselines3's SAC (PyTorch);
- sbx: SBX's SAC (`sbx-rl`, JAX on the CPU; it updates the target networks every gradient step).

sb3 and sbx are left out, with a note, where their package is not installed (naming them in
`--impls` then stops in one line).

For every cell of the grid (env x thread count) every implementation runs `--repeats` times;
the order of the implementations rotates by one every repeat (ours, ours-bf16, sb3, sbx; then
ours-bf16, sb3, sbx, ours; ...) to cancel slow drift in machine load. Each cell reports the median
steps/s per implementation and the median of the per-pair ratios (a pair: the same repeat) for
ours/sb3, ours/sbx, ours-bf16/sb3, ours-bf16/sbx and ours-bf16/ours; a final table repeats them for
every cell, and `--json` holds every run, every cell's summary, the CPU model and the versions.

Thread budget: every child gets the cell's thread count T: torch.set_num_threads(T) in it (our
script's --threads; the workers call it themselves), OMP_NUM_THREADS and MKL_NUM_THREADS in its
environment, and it is pinned (sched_setaffinity, before it starts) to the first T of the CPUs
this process may use, unless T is all of them. The SBX child also gets JAX_PLATFORMS=cpu and, with
T = 1, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"; with more,
XLA's thread pool is bounded only by the pinning (XLA sizes it from the CPUs it may use).

Each run is a fresh child process that does `learn(W + N)`: W random warm-up steps, then N steps
that each take a policy action and do one gradient update. The reported steps/s covers only those
N steps, the window [W, W + N], except SBX's:

- ours, ours-bf16: `update_phase_sps` from `<runs_dir>/<run_name>/summary.json`, which our script
  writes: (global_step - W) / time from just before its first update to the end. It updates only
  while global_step > W, so it too does W random steps and then exactly N updates. Its window
  opens after env step W + 1 (one env step fewer than SB3's, under 0.1% at N = 2000) and closes
  after its final checkpoint write (a few MB, also well under 1%).
- sb3: a callback takes time.perf_counter() right after env step W (the last random step, so the
  next thing SB3 does is the first policy step and the first gradient update) and again when
  training ends; steps/s = (final num_timesteps - W) / elapsed. SB3 does no update on the step
  that reaches learning_starts (it trains only while num_timesteps > learning_starts), so
  `learning_starts=W` gives W random steps followed by exactly N updates.
- sbx: the same callback (SBX's SAC is an SB3 OffPolicyAlgorithm), but started K = `--sbx-settle`
  steps later, after env step W + K: the window is [W + K, W + N]. JAX compiles the update and
  the policy on their first calls, which takes seconds; the window leaves that out, and so
  favours SBX slightly, while ours and SB3 pay for their first updates (allocator and kernel
  warm-up) inside theirs. Use a larger `--steps` to dilute those.

Every run uses the same seed. Process-level timings are noisy on a shared machine: every run line
shows the 1-minute load average just before it started; anything else running on the cores skews
the numbers. Prefer the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import (
    BenchmarkError,
    RunResult,
    add_driver_args,
    available_cpus,
    check_driver_args,
    check_script,
    exit_on_sigterm,
    fmt,
    load_1min,
    machine_info,
    median_sps,
    pair_ratios,
    pinned_cpus,
    read_our_summary,
    run_child,
    run_repeats,
    run_worker_child,
    runs_directory,
    write_json,
)

from actor_critic.run_directory import SUMMARY

REPO_ROOT = Path(__file__).resolve().parent.parent

IMPLS = ("ours", "ours-bf16", "sb3", "sbx")  # also the order of the first repeat
OURS = ("ours", "ours-bf16")  # the implementations that run our script
WORKERS = ("sb3", "sbx")  # the peers, run as `--worker <name>` children of this script
PEER_MODULES = {"sb3": "stable_baselines3", "sbx": "sbx"}  # what each worker imports
RATIOS = (("ours", "sb3"), ("ours", "sbx"), ("ours-bf16", "sb3"), ("ours-bf16", "sbx"), ("ours-bf16", "ours"))
PACKAGES = ("torch", "stable-baselines3", "sbx-rl", "jax", "jaxlib", "gymnasium", "mujoco")
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def thread_counts(text: str) -> list[int]:
    """--threads: comma-separated positive ints, repeats dropped."""
    try:
        counts = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated thread counts, got {text!r}") from None
    if not counts or min(counts) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive thread counts, got {text!r}")
    return list(dict.fromkeys(counts))


def env_ids(text: str) -> list[str]:
    """--env-ids: comma-separated ids registered with Gymnasium, repeats dropped."""
    import gymnasium as gym

    ids = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not ids:
        raise argparse.ArgumentTypeError(f"expected comma-separated env ids, got {text!r}")
    for env_id in ids:
        try:
            gym.spec(env_id)
        except gym.error.Error as e:
            raise argparse.ArgumentTypeError(str(e).splitlines()[0]) from None
    return ids


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Training-phase steps/s of our SAC (fp32, bf16) vs Stable-Baselines3 and SBX SAC, "
        "over a grid of envs x thread counts.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--env-ids", "--env-id", dest="env_ids", type=env_ids, default="HalfCheetah-v4,Humanoid-v4",
        help="comma-separated env ids: the grid's rows",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=thread_counts, default="1,2",
        help="comma-separated thread counts: the grid's columns; each child gets that many torch "
        "threads, OMP/MKL threads and CPUs",
    )  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="runs of each impl in each cell")
    p.add_argument("--steps", type=int, default=3000, help="N: timed env steps, one update each")
    p.add_argument("--warmup", type=int, default=1000, help="W: random-action steps before N")
    p.add_argument(
        "--sbx-settle", type=int, default=100,
        help="K: SBX's window opens K steps after W, leaving out its JIT compilation",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=1)
    add_driver_args(p, script=REPO_ROOT / "sac_continuous.py", impls=IMPLS, workers=WORKERS, pin_cpus=True)
    args = p.parse_args(argv)

    explicit = args.impls.strip() != "all"
    check_driver_args(p, args, IMPLS)
    if args.steps <= 0 or args.warmup < 0 or args.repeats <= 0 or args.sbx_settle < 0:
        p.error("--steps and --repeats must be positive, --warmup and --sbx-settle non-negative")

    if args.worker is not None:  # one env and one thread count, from the driver
        if len(args.env_ids) != 1 or len(args.threads) != 1:
            p.error("--worker takes one --env-id and one --threads")
        args.env_id, args.threads = args.env_ids[0], args.threads[0]
        return args

    args.dropped = unavailable(args.impls)
    if args.dropped and explicit:
        p.error("; ".join(f"--impls {impl}: {why}" for impl, why in args.dropped.items()))
    args.impls = [impl for impl in args.impls if impl not in args.dropped]
    if "sbx" in args.impls and args.sbx_settle >= args.steps:
        p.error(
            f"--sbx-settle ({args.sbx_settle}) must be below --steps ({args.steps}): "
            "SBX's timed window is [W+K, W+N]"
        )
    return args


def unavailable(impls: list[str]) -> dict[str, str]:
    """Why this machine cannot run each of `impls` that it cannot (ours-bf16 without native bf16,
    a peer whose package is missing); found without importing the peers."""
    why = {}
    if "ours-bf16" in impls:
        import torch

        from actor_critic.training import bf16_unsupported

        if (reason := bf16_unsupported(torch.device("cpu"))) is not None:
            why["ours-bf16"] = reason
    for impl in WORKERS:
        module = PEER_MODULES[impl]
        if impl in impls and importlib.util.find_spec(module) is None:
            why[impl] = f"no module {module} (pip install -r benchmarks/requirements.txt)"
    return why


# --------------------------------------------------------------------------- workers (children)


def timed_learn(model: Any, start_at: int, total: int) -> tuple[int, float]:
    """`model.learn(total)`, timing the window from just after env step `start_at` to the end of
    training; return its env steps and seconds. `model` is an SB3 OffPolicyAlgorithm (SBX's too)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class WindowTimer(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.start_time: float | None = None
            self.start_steps = 0
            self.end_time = 0.0
            self.end_steps = 0

        def _on_step(self) -> bool:
            # Called after every env step, after num_timesteps was incremented and before the
            # gradient update that follows it (SB3 and SBX train only once num_timesteps > W).
            if self.start_time is None and self.num_timesteps >= start_at:
                self.start_time = time.perf_counter()
                self.start_steps = self.num_timesteps
            return True

        def _on_training_end(self) -> None:
            self.end_time = time.perf_counter()
            self.end_steps = self.num_timesteps

    timer = WindowTimer()
    model.learn(total, callback=timer)
    if timer.start_time is None:
        raise BenchmarkError(f"{type(model).__name__} never reached env step {start_at}")
    return timer.end_steps - timer.start_steps, timer.end_time - timer.start_time


def window_result(steps: int, elapsed: float, model: Any) -> dict[str, Any]:
    """The timing and what both workers record about the run (see `timed_learn`)."""
    import torch

    return {
        "update_phase_sps": steps / elapsed,
        "update_phase_steps": steps,
        "update_phase_s": elapsed,
        "n_updates": int(model._n_updates),
        "torch_threads": torch.get_num_threads(),
        "cpus": available_cpus(),
        "target_entropy": float(model.target_entropy),
    }


def sb3_worker(args: argparse.Namespace) -> None:
    """Train SB3's SAC for W + N steps and write the timing of the last N steps as JSON."""
    import torch

    torch.set_num_threads(args.threads)

    import gymnasium as gym
    from stable_baselines3 import SAC

    model = SAC(
        "MlpPolicy",
        gym.make(args.env_id),
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
    steps, elapsed = timed_learn(model, args.warmup, args.warmup + args.steps)
    result = window_result(steps, elapsed, model)
    result["actor"] = str(model.actor.latent_pi)
    result["critic"] = str(model.critic.q_networks[0])
    args.worker_out.write_text(json.dumps(result, indent=2))


def sbx_worker(args: argparse.Namespace) -> None:
    """Train SBX's SAC for W + N steps and write the timing of the last N - K steps as JSON."""
    import torch

    torch.set_num_threads(args.threads)  # SB3's replay buffer hands SBX torch tensors

    import gymnasium as gym
    import jax
    from sbx import SAC

    model = SAC(
        "MlpPolicy",
        gym.make(args.env_id),
        learning_rate=3e-4,  # the critics' too (qf_learning_rate=None) and the entropy coefficient's
        buffer_size=1_000_000,
        learning_starts=args.warmup,
        batch_size=256,
        tau=0.005,  # SBX has no target_update_interval: it averages the targets every update
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        ent_coef="auto",  # learned, from 1.0
        policy_delay=1,  # the actor updated every step
        policy_kwargs={"net_arch": [256, 256]},
        seed=args.seed,
        verbose=0,
    )
    start_at = args.warmup + args.sbx_settle
    steps, elapsed = timed_learn(model, start_at, args.warmup + args.steps)
    result = window_result(steps, elapsed, model)
    result.update(
        settle_steps=args.sbx_settle,
        ent_coef_init=float(model.ent_coef.ent_coef_init),
        jax_devices=[str(d) for d in jax.devices()],
        xla_flags=os.environ.get("XLA_FLAGS"),
        actor=str(model.policy.actor),
        critic=str(model.policy.qf),
    )
    args.worker_out.write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------- driver (parent)


def run_ours(args: argparse.Namespace, repeat: int, runs_dir: Path, impl: str = "ours") -> RunResult:
    """One run of our script: at its default precision (fp32) for "ours", bf16 for "ours-bf16"."""
    run_name = f"bench_{impl}_{repeat}"
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
    if impl == "ours-bf16":
        cmd += ["--precision", "bf16"]  # last, so that --extra-ours cannot undo it

    what = f"our SAC ({args.script.name}, {impl}, repeat {repeat + 1})"
    load = load_1min()
    wall = run_child(cmd, runs_dir, args, what)
    summary_path = runs_dir / run_name / SUMMARY
    summary = read_our_summary(summary_path, "SAC", "update_phase_sps")
    if "update_phase_sps" not in summary:
        keys = ", ".join(sorted(summary))
        raise BenchmarkError(f"{summary_path} has no 'update_phase_sps' (keys: {keys})")
    return RunResult(impl, repeat, float(summary["update_phase_sps"]), wall, load, summary)


def run_ours_bf16(args: argparse.Namespace, repeat: int, runs_dir: Path) -> RunResult:
    return run_ours(args, repeat, runs_dir, impl="ours-bf16")


def worker_flags(args: argparse.Namespace) -> list[str]:
    return ["--steps", str(args.steps), "--warmup", str(args.warmup)]


def run_sb3(args: argparse.Namespace, repeat: int, runs_dir: Path) -> RunResult:
    script = Path(__file__).resolve()
    return run_worker_child(
        args, repeat, runs_dir, script, "sb3", "SAC", "update_phase_sps", worker_flags(args)
    )


def run_sbx(args: argparse.Namespace, repeat: int, runs_dir: Path) -> RunResult:
    env = {"JAX_PLATFORMS": "cpu"}
    if args.threads == 1:
        env["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""), XLA_ONE_THREAD]))
    flags = [*worker_flags(args), "--sbx-settle", str(args.sbx_settle)]
    script = Path(__file__).resolve()
    return run_worker_child(args, repeat, runs_dir, script, "sbx", "SAC", "update_phase_sps", flags, env)


RUNNERS = {"ours": run_ours, "ours-bf16": run_ours_bf16, "sb3": run_sb3, "sbx": run_sbx}


def summarize_cell(results: list[RunResult], impls: list[str]) -> dict[str, Any]:
    """Median steps/s per implementation, and per ratio (of those that ran) its per-pair values
    (same repeat), their median and the ratio of the medians."""
    medians = median_sps(results, impls)
    ratios = {}
    for a, b in RATIOS:
        if a in impls and b in impls:
            pairs = pair_ratios(results, a, b)
            ratios[f"{a}/{b}"] = {
                "pair_ratios": pairs,
                "median_pair_ratio": statistics.median(pairs) if pairs else None,
                "ratio_of_medians": medians[a] / medians[b] if medians[a] and medians[b] else None,
            }
    return {"median_sps": medians, "ratios": ratios}


def cell_lines(summary: dict[str, Any]) -> list[str]:
    """The printed summary of one cell."""
    med = ", ".join(f"{impl} {fmt(sps)}" for impl, sps in summary["median_sps"].items())
    lines = [f"median steps/s: {med}"]
    for name, r in summary["ratios"].items():
        pairs = ", ".join(f"{x:.3f}" for x in r["pair_ratios"]) or "n/a"
        lines.append(f"  {name:<14} median of per-pair ratios {fmt(r['median_pair_ratio'], '.3f')} ({pairs})")
    return lines


def table_lines(cells: list[dict[str, Any]]) -> list[str]:
    """The final table: a row per cell (env x threads); median steps/s, then median per-pair ratios."""
    impls = list(cells[0]["summary"]["median_sps"])
    ratios = list(cells[0]["summary"]["ratios"])
    head = ["env", "threads", *impls, *ratios]
    rows = [
        [
            c["env_id"],
            str(c["threads"]),
            *(fmt(c["summary"]["median_sps"][i]) for i in impls),
            *(fmt(c["summary"]["ratios"][r]["median_pair_ratio"], ".3f") for r in ratios),
        ]
        for c in cells
    ]
    widths = [max(len(row[j]) for row in [head, *rows]) for j in range(len(head))]

    def line(row: list[str]) -> str:
        return "  ".join(
            x.ljust(w) if j == 0 else x.rjust(w) for j, (x, w) in enumerate(zip(row, widths, strict=True))
        )

    return [line(head), *map(line, rows)]


def pinning(threads: int) -> str:
    cpus = pinned_cpus(threads)
    return "not pinned (all CPUs)" if cpus is None else f"pinned to CPUs {','.join(map(str, cpus))}"


def main() -> int:
    args = parse_args()
    if args.worker == "sb3":
        sb3_worker(args)
        return 0
    if args.worker == "sbx":
        sbx_worker(args)
        return 0

    if not check_script(args, OURS):
        return 1
    exit_on_sigterm()

    info = {
        "env_ids": args.env_ids,
        "threads": args.threads,
        "impls": args.impls,
        "dropped": args.dropped,
        "repeats": args.repeats,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "sbx_settle_steps": args.sbx_settle,
        "seed": args.seed,
        "extra_ours": args.extra_ours,
        "script": str(args.script),
        **machine_info(PACKAGES),
        "cpus_available": available_cpus(),
    }
    print("SAC training speed: ours (fp32, bf16) vs Stable-Baselines3 vs SBX (JAX)")
    threads = ", ".join(map(str, args.threads))
    print(f"  impls {', '.join(args.impls)}; envs {', '.join(args.env_ids)}; threads per child {threads}")
    print(f"  1 env, batch 256, 256x256 MLPs, 1 update/step, seed {args.seed}")
    print(f"  warm-up W={args.warmup} random steps, timed window N={args.steps} steps [W, W+N]")
    if "sbx" in args.impls:
        print(
            f"  SBX's window is [W+K, W+N], K={args.sbx_settle}: it leaves out SBX's JIT compilation\n"
            "  and so favours SBX slightly, while ours and SB3 pay for their first updates"
        )
    sb3, sbx, jax = info["stable_baselines3"], info["sbx_rl"], info["jax"]
    print(f"  torch {info['torch']} (CPU), SB3 {sb3}, SBX {sbx} (jax {jax})")
    print(f"  gymnasium {info['gymnasium']}, mujoco {info['mujoco']}")
    cpus = info["cpus_available"]
    print(f"  CPU {info['cpu']} ({info['cpu_count']} logical cores; this process may use {cpus})")
    print(f"  load average at start {info['loadavg_at_start']}")
    ours = f"{args.script.name}{f' {args.extra_ours}' if args.extra_ours else ''}"
    if "ours" in args.impls:
        print(f"  ours: {ours}")
    if "ours-bf16" in args.impls:
        print(f"  ours-bf16: {ours} --precision bf16")
    for impl, why in args.dropped.items():
        print(f"note: left out {impl}: {why}")

    cells: list[dict[str, Any]] = []
    error = None
    with runs_directory(args, "sac_speed_") as runs_dir:
        try:
            for env_id in args.env_ids:
                for threads in args.threads:
                    print(f"\n== {env_id}, {threads} thread(s), {pinning(threads)}", flush=True)
                    cell_args = argparse.Namespace(**{**vars(args), "env_id": env_id, "threads": threads})
                    cell_dir = runs_dir / f"{env_id.replace('/', '_')}_t{threads}"
                    cell_dir.mkdir()
                    results = run_repeats(cell_args, RUNNERS, cell_dir, IMPLS)
                    summary = summarize_cell(results, args.impls)
                    print("\n".join(cell_lines(summary)), flush=True)
                    cells.append(
                        {
                            "env_id": env_id,
                            "threads": threads,
                            "pinned_cpus": pinned_cpus(threads),
                            "runs": [asdict(r) for r in results],
                            "summary": summary,
                        }
                    )
        except BenchmarkError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            error = str(e)

    if cells:
        partial = " (complete cells only)" if error else ""
        print(f"\nsummary{partial}: median steps/s per impl, then the median of each per-pair ratio")
        print("\n".join(table_lines(cells)))
    if args.json is not None:
        write_json(args.json, {"settings": info, "cells": cells, "error": error})
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
