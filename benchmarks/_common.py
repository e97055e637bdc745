"""Driver code shared by `sac_speed.py` and `ppo_speed.py` (ours vs Stable-Baselines3).

Each benchmark keeps its own argument parser, SB3 worker and the way it builds our command and
reads our number; this module holds what is the same in both: child processes with pinned
thread counts, the settings and header, the alternating repeat loop, the summary and the JSON.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from actor_critic.run_directory import SUMMARY

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


# A runner does one timed run of one implementation: runner(args, repeat, runs_dir).
Runner = Callable[[argparse.Namespace, int, Path], RunResult]


# --------------------------------------------------------------------------- arguments


def add_driver_args(p: argparse.ArgumentParser, script: Path) -> None:
    """Add the options both benchmarks share, from --impls on; `script` is --script's default."""
    p.add_argument("--impls", default="ours,sb3", help="comma-separated subset of: ours,sb3")
    p.add_argument(
        "--extra-ours",
        default="",
        help="extra flags for our script, one string (absolute paths: it runs in a temp dir)",
    )
    p.add_argument("--script", type=Path, default=script)
    p.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    p.add_argument("--keep-runs", action="store_true", help="keep our script's run directories")
    p.add_argument("--child-timeout", type=float, default=3600.0, help="seconds per child run")
    p.add_argument("--verbose", action="store_true", help="show every child's output")
    # Internal: the SB3 side runs as a child of this script.
    p.add_argument("--worker", choices=["sb3"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)


def check_driver_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Resolve --script and split --impls in place; exit through `p.error` if --impls is bad."""
    args.script = args.script.resolve()  # children run in a temporary directory
    args.impls = [s.strip() for s in args.impls.split(",") if s.strip()]
    unknown = [s for s in args.impls if s not in IMPLS]
    if unknown or not args.impls:
        p.error(f"--impls must be a comma-separated subset of {','.join(IMPLS)}, got {unknown}")


# --------------------------------------------------------------------------- child processes


def child_env(threads: int) -> dict[str, str]:
    """This process's environment with OMP_NUM_THREADS and MKL_NUM_THREADS set to `threads`."""
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


def read_our_summary(summary_path: Path, algo: str, key: str) -> dict[str, Any]:
    """Load the summary.json our script wrote; raise BenchmarkError if it is missing."""
    if not summary_path.is_file():
        raise BenchmarkError(
            f"our {algo} exited cleanly but wrote no {summary_path}; "
            f"it must write {SUMMARY} with the key '{key}'"
        )
    return json.loads(summary_path.read_text())


def run_sb3_child(
    args: argparse.Namespace,
    repeat: int,
    runs_dir: Path,
    script: Path,
    algo: str,
    key: str,
    flags: list[str],
) -> RunResult:
    """Run `script --worker sb3` with `flags` and read the steps/s it wrote under `key`."""
    out = runs_dir / f"sb3_{repeat}.json"
    cmd = [
        sys.executable,
        str(script),
        "--worker", "sb3",
        "--worker-out", str(out),
        "--env-id", args.env_id,
        "--seed", str(args.seed),
        *flags,
        "--threads", str(args.threads),
    ]  # fmt: skip
    load = load_1min()
    wall = run_child(cmd, runs_dir, args, f"SB3 {algo} (repeat {repeat + 1})")
    result = json.loads(out.read_text())
    return RunResult("sb3", repeat, float(result[key]), wall, load, result)


# --------------------------------------------------------------------------- machine and settings


def load_1min() -> float | None:
    """The 1-minute load average, or None where the OS has none."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(package: str) -> str:
    """The installed version of `package`, or "not installed"."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def settings(args: argparse.Namespace, specific: dict[str, Any]) -> dict[str, Any]:
    """The run's settings and environment for the JSON; `specific` goes after "repeats"."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "env_id": args.env_id,
        "impls": args.impls,
        "repeats": args.repeats,
        **specific,
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


# --------------------------------------------------------------------------- results


def summarize(results: list[RunResult]) -> dict[str, Any]:
    """Median steps/s per implementation, their ratio and the per-pair (same repeat) ratios."""
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
    """`x` formatted with `spec`, or "n/a" for None."""
    return "n/a" if x is None else format(x, spec)


# --------------------------------------------------------------------------- driver (parent)


def run_benchmark(
    args: argparse.Namespace,
    header: list[str],
    specific_settings: dict[str, Any],
    runners: dict[str, Runner],
    tmp_prefix: str,
) -> int:
    """Run the alternating repeats, print every run and the summary; return the exit code.

    `header` is the title line and the benchmark's own setting lines, printed before the shared
    ones (versions, CPU, load); `specific_settings` goes into the settings (see `settings`).
    """
    if "ours" in args.impls and not args.script.is_file():
        print(f"error: our script {args.script} does not exist (use --impls sb3?)", file=sys.stderr)
        return 1

    # On SIGTERM, unwind through subprocess.run, which then kills the running child.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    info = settings(args, specific_settings)
    for line in header:
        print(line)
    print(f"  torch {info['torch']} (CPU), {args.threads} torch threads per child")
    sb3, gym, mujoco = info["stable_baselines3"], info["gymnasium"], info["mujoco"]
    print(f"  SB3 {sb3}, gymnasium {gym}, mujoco {mujoco}")
    print(f"  CPU {info['cpu']} ({info['cpu_count']} logical cores)")
    print(f"  load average at start {info['loadavg_at_start']}")
    if "ours" in args.impls:
        extra = f" {args.extra_ours}" if args.extra_ours else ""
        print(f"  ours: {args.script.name}{extra}")
    print(flush=True)

    runs_dir = Path(tempfile.mkdtemp(prefix=tmp_prefix))
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
