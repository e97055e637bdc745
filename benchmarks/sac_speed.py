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
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
IMPLS = ("ours", "sb3")


@dataclass
class RunResult:
    impl: str
    repeat: int
    steps_per_s: float
    wall_s: float  # wall time of the whole child process, start-up and warm-up included
    load_before: float | None  # 1-minute load average just before the run
    details: dict[str, Any] = field(default_factory=dict)


class BenchmarkError(RuntimeError):
    pass


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
    p.add_argument("--impls", default="ours,sb3", help="comma-separated subset of: ours,sb3")
    p.add_argument(
        "--extra-ours",
        default="",
        help="extra flags for our script, one string (absolute paths: it runs in a temp dir)",
    )
    p.add_argument("--script", type=Path, default=REPO_ROOT / "sac_continuous.py")
    p.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    p.add_argument("--keep-runs", action="store_true", help="keep our script's run directories")
    p.add_argument("--child-timeout", type=float, default=3600.0, help="seconds per child run")
    p.add_argument("--verbose", action="store_true", help="show every child's output")
    # Internal: the SB3 side runs as a child of this script.
    p.add_argument("--worker", choices=["sb3"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    args.script = args.script.resolve()  # children run in a temporary directory
    args.impls = [s.strip() for s in args.impls.split(",") if s.strip()]
    unknown = [s for s in args.impls if s not in IMPLS]
    if unknown or not args.impls:
        p.error(f"--impls must be a comma-separated subset of {','.join(IMPLS)}, got {unknown}")
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


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_child(cmd: list[str], cwd: Path, args: argparse.Namespace, what: str) -> float:
    """Run one child process; return its wall time. Raise BenchmarkError if it fails."""
    if args.verbose:
        print(f"  $ {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            check=False,
            cwd=cwd,  # keeps stray files (e.g. MUJOCO_LOG.TXT) out of the repo
            env=child_env(args.threads),
            stdout=None if args.verbose else subprocess.PIPE,
            stderr=None if args.verbose else subprocess.STDOUT,
            text=True,
            timeout=args.child_timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchmarkError(f"{what} timed out after {args.child_timeout:.0f} s") from e
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").splitlines()[-30:])
        raise BenchmarkError(
            f"{what} failed with exit code {proc.returncode}\n"
            f"command: {shlex.join(cmd)}\n--- last lines of its output ---\n{tail}"
        )
    return wall


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
    summary_path = runs_dir / run_name / "summary.json"
    if not summary_path.is_file():
        raise BenchmarkError(
            f"our SAC exited cleanly but wrote no {summary_path}; "
            "it must write summary.json with the key 'update_phase_sps'"
        )
    summary = json.loads(summary_path.read_text())
    if "update_phase_sps" not in summary:
        keys = ", ".join(sorted(summary))
        raise BenchmarkError(f"{summary_path} has no 'update_phase_sps' (keys: {keys})")
    return RunResult("ours", repeat, float(summary["update_phase_sps"]), wall, load, summary)


def run_sb3(args: argparse.Namespace, repeat: int, runs_dir: Path) -> RunResult:
    out = runs_dir / f"sb3_{repeat}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker", "sb3",
        "--worker-out", str(out),
        "--env-id", args.env_id,
        "--seed", str(args.seed),
        "--steps", str(args.steps),
        "--warmup", str(args.warmup),
        "--threads", str(args.threads),
    ]  # fmt: skip
    load = load_1min()
    wall = run_child(cmd, runs_dir, args, f"SB3 SAC (repeat {repeat + 1})")
    result = json.loads(out.read_text())
    return RunResult("sb3", repeat, float(result["update_phase_sps"]), wall, load, result)


def load_1min() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def settings(args: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "env_id": args.env_id,
        "impls": args.impls,
        "repeats": args.repeats,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "seed": args.seed,
        "threads": args.threads,
        "extra_ours": args.extra_ours,
        "script": str(args.script),
        "python": platform.python_version(),
        "torch": version("torch"),
        "stable_baselines3": version("stable-baselines3"),
        "gymnasium": version("gymnasium"),
        "mujoco": version("mujoco"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": load,
    }


def summarize(results: list[RunResult]) -> dict[str, Any]:
    by_impl = {impl: [r.steps_per_s for r in results if r.impl == impl] for impl in IMPLS}
    medians = {impl: statistics.median(v) if v else None for impl, v in by_impl.items()}
    ours = {r.repeat: r.steps_per_s for r in results if r.impl == "ours"}
    sb3 = {r.repeat: r.steps_per_s for r in results if r.impl == "sb3"}
    pair_ratios = [ours[i] / sb3[i] for i in sorted(ours) if i in sb3]
    ratio = None
    if medians["ours"] is not None and medians["sb3"] is not None:
        ratio = medians["ours"] / medians["sb3"]
    return {
        "median_sps": medians,
        "ratio_of_medians": ratio,
        "pair_ratios": pair_ratios,
        "median_pair_ratio": statistics.median(pair_ratios) if pair_ratios else None,
    }


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def main() -> int:
    args = parse_args()
    if args.worker == "sb3":
        sb3_worker(args)
        return 0

    if "ours" in args.impls and not args.script.is_file():
        print(f"error: our script {args.script} does not exist (use --impls sb3?)", file=sys.stderr)
        return 1

    # On SIGTERM, unwind through subprocess.run, which then kills the running child.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    info = settings(args)
    print("SAC training speed: ours vs Stable-Baselines3")
    print(f"  {args.env_id}, 1 env, batch 256, 256x256 MLPs, 1 update/step, seed {args.seed}")
    print(f"  warm-up W={args.warmup} random steps, timed window N={args.steps} steps [W, W+N]")
    print(f"  torch {info['torch']} (CPU), {args.threads} torch threads per child")
    sb3, gym, mujoco = info["stable_baselines3"], info["gymnasium"], info["mujoco"]
    print(f"  SB3 {sb3}, gymnasium {gym}, mujoco {mujoco}")
    print(f"  CPU {info['cpu']} ({info['cpu_count']} logical cores)")
    print(f"  load average at start {info['loadavg_at_start']}")
    if "ours" in args.impls:
        extra = f" {args.extra_ours}" if args.extra_ours else ""
        print(f"  ours: {args.script.name}{extra}")
    print(flush=True)

    runs_dir = Path(tempfile.mkdtemp(prefix="sac_speed_"))
    runners = {"ours": run_ours, "sb3": run_sb3}
    results: list[RunResult] = []
    try:
        for repeat in range(args.repeats):
            order = list(IMPLS) if repeat % 2 == 0 else list(reversed(IMPLS))
            for impl in (i for i in order if i in args.impls):
                r = runners[impl](args, repeat, runs_dir)
                results.append(r)
                load = fmt(r.load_before, ".2f")
                print(
                    f"repeat {repeat + 1}/{args.repeats}  {impl:<4}  {r.steps_per_s:8.1f} steps/s"
                    f"   (child wall time {r.wall_s:.1f} s, load avg before {load})",
                    flush=True,
                )
    except BenchmarkError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep_runs:
            print(f"run directories kept in {runs_dir}")
        else:
            shutil.rmtree(runs_dir, ignore_errors=True)

    summary = summarize(results)
    med = summary["median_sps"]
    pairs = ", ".join(f"{x:.3f}" for x in summary["pair_ratios"]) or "n/a"
    print(
        f"\nmedian steps/s: ours {fmt(med['ours'])}, SB3 {fmt(med['sb3'])}, "
        f"ratio {fmt(summary['ratio_of_medians'], '.3f')} "
        f"(per-pair ratios: {pairs}; median {fmt(summary['median_pair_ratio'], '.3f')})"
    )

    if args.json is not None:
        payload = {"settings": info, "runs": [asdict(r) for r in results], "summary": summary}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
